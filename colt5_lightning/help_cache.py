"""`colt5 fit --help` (validate, test, predict) answered from a cache.

Building LightningCLI's parser imports torch and Lightning and inspects every class: 5–8 s on a
small machine. Its text depends only on the installed packages, this package's sources, the
terminal width and the arguments, so the first call stores it under a key made of those, and
later calls print it without importing either.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
from contextlib import redirect_stdout
from importlib import metadata
from pathlib import Path
from typing import Callable, List, Optional

from ._cache import cache_dir

PACKAGES = ("colt5-lightning", "lightning", "jsonargparse", "torch", "torchmetrics", "omegaconf")


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _sources() -> list:
    root = Path(__file__).resolve().parent
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*.py"))


def cache_file(argv: List[str]) -> Path:
    key = json.dumps([argv, sys.version, [_version(p) for p in PACKAGES], _sources(),
                      shutil.get_terminal_size().columns, sys.stdout.isatty()])
    return cache_dir() / "help" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.txt"


def print_help(argv: List[str], build: Callable[[List[str]], None]) -> None:
    """Prints the help `build(argv)` prints (then exits 0), from the cache when it holds it."""
    path = cache_file(argv)
    try:
        sys.stdout.write(path.read_text())
        sys.exit(0)
    except OSError:
        pass
    text = io.StringIO()
    try:
        with redirect_stdout(text):
            build(argv)
    except SystemExit as done:
        sys.stdout.write(text.getvalue())
        if done.code in (None, 0):
            _store(path, text.getvalue())
        raise
    sys.stdout.write(text.getvalue())


def _store(path: Path, text: str) -> None:
    """Atomically; a cache that cannot be written only costs the next call its speed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(text)
        os.replace(partial, path)
    except OSError:
        pass
