"""Where colt5_lightning keeps files it can rebuild: the byte corpora, the CLI's help texts."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$COLT5_CACHE_DIR`` if set, else ``~/.cache/colt5_lightning``."""
    env = os.environ.get("COLT5_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "colt5_lightning"
