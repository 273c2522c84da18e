"""The README's Python example runs as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has a Python example"
    for code in blocks:
        namespace = {}
        exec(compile(code, str(README), "exec"), namespace)
        assert tuple(namespace["out"].shape) == (2, 4096, 512)
