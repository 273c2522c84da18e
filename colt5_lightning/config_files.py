"""Config files that build on others: a `base_configs:` list at the top of a YAML file.

    # recipes/language_modeling/gpu_8k.yaml
    base_configs: [../../configs/trainer/gpu_bf16.yaml, ../../configs/model/lm/base.yaml]
    trainer: {max_steps: 20000}

`colt5 fit --config recipes/language_modeling/gpu_8k.yaml` then reads as
`--config <gpu_bf16.yaml> --config <base.yaml> --config <the rest of gpu_8k.yaml>`: the bases
first (paths relative to the file naming them, themselves expanded the same way), so the
file's own values win. A recipe stays one complete experiment while the shared pieces are
written once, in configs/.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import yaml

BASE_KEY = "base_configs"


class ConfigFileError(ValueError):
    """A base_configs entry is not a list of files, names a missing file, or forms a cycle."""


def expand_base_configs(args: Sequence[str]) -> List[str]:
    """args with every `--config FILE` whose FILE has base_configs replaced by its expansion."""
    out: List[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            out += _config_args(args[i + 1], ())
            i += 2
        elif arg.startswith("--config="):
            out += _config_args(arg.split("=", 1)[1], ())
            i += 1
        else:
            out.append(arg)
            i += 1
    return out


def _config_args(value: str, chain: Tuple[Path, ...]) -> List[str]:
    path = Path(value)
    try:
        is_file = path.is_file()
    except OSError:  # a YAML string given to --config, too long to be a path
        is_file = False
    if not is_file:
        return ["--config", value]  # a YAML string, or a missing file the parser reports
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or BASE_KEY not in raw:
        return ["--config", value]
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigFileError(f"{path}: {BASE_KEY} form a cycle ({cycle})")
    bases = raw.pop(BASE_KEY)
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigFileError(f"{path}: {BASE_KEY} must be a list of YAML file paths relative to the file, "
                              f"got {bases!r}")
    args: List[str] = []
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigFileError(f"{path}: {BASE_KEY} names {base}, but there is no file {base_path}")
        args += _config_args(str(base_path), (*chain, resolved))
    return args + (["--config", yaml.safe_dump(raw, sort_keys=False)] if raw else [])
