"""Turn a file or a folder of text into one byte array on disk, read via ``numpy.memmap``.

A single file is mapped directly. A folder is concatenated once into a cache file
whose name is a hash of the sorted file list with sizes and modification times (and
the byte cap), so an edit to any file yields a new cache file and an unchanged folder
reuses the old one. The cache is written to a temporary file in the cache folder and
moved into place with ``os.replace``, so a crash never leaves a half-written cache
under the final name.
"""
from __future__ import annotations

import hashlib
import os
import sysconfig
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .._cache import cache_dir

TEXT_SUFFIXES: Tuple[str, ...] = (".py", ".txt", ".md")
STDLIB_SUFFIXES: Tuple[str, ...] = (".py",)
# Third-party packages live inside the stdlib folder; they are not part of the stdlib corpus.
_STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
_COPY_CHUNK = 1 << 20


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def list_text_files(root: Path, suffixes: Sequence[str], skip_dirs: frozenset = frozenset()) -> List[Path]:
    """Files under ``root`` (recursively) whose suffix is in ``suffixes``, sorted by relative path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip_dirs]
        for name in filenames:
            if name.endswith(tuple(suffixes)):
                path = Path(dirpath) / name
                if path.is_file():
                    found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def cache_key(files: Sequence[Path], max_bytes: Optional[int]) -> str:
    digest = hashlib.sha256()
    digest.update(f"max_bytes={max_bytes}\n".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:24]


def _expected_size(files: Sequence[Path], max_bytes: Optional[int]) -> int:
    total = sum(p.stat().st_size for p in files)
    return total if max_bytes is None else min(total, max_bytes)


def write_concatenated(files: Sequence[Path], target: Path, max_bytes: Optional[int]) -> None:
    """Concatenate ``files`` (at most ``max_bytes`` bytes) into ``target`` atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            remaining = max_bytes
            for path in files:
                if remaining == 0:
                    break
                with open(path, "rb") as src:
                    while remaining is None or remaining > 0:
                        size = _COPY_CHUNK if remaining is None else min(_COPY_CHUNK, remaining)
                        chunk = src.read(size)
                        if not chunk:
                            break
                        out.write(chunk)
                        if remaining is not None:
                            remaining -= len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; the cache is plain readable data
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def folder_cache(root: Path, suffixes: Sequence[str], max_bytes: Optional[int],
                 skip_dirs: frozenset = frozenset()) -> Path:
    """Path of the concatenated cache for ``root``, building it if it is missing or the wrong size."""
    files = list_text_files(root, suffixes, skip_dirs)
    if not files:
        raise ValueError(f"path {str(root)!r} holds no files matching {', '.join('*' + s for s in suffixes)}")
    target = cache_dir() / f"corpus-{cache_key(files, max_bytes)}.bin"
    if not (target.is_file() and target.stat().st_size == _expected_size(files, max_bytes)):
        write_concatenated(files, target, max_bytes)
    return target


def resolve_corpus(path: Optional[str], max_bytes: Optional[int]) -> Tuple[Path, int]:
    """The file to memory-map for ``path`` (None = stdlib sources) and how many of its bytes to use."""
    if path is None:
        try:
            source = folder_cache(stdlib_dir(), STDLIB_SUFFIXES, max_bytes, _STDLIB_SKIP_DIRS)
        except ValueError as error:
            raise ValueError(
                f"path=None reads the Python stdlib's .py sources, but none were found ({error}); "
                f"pass path= a text file or folder"
            ) from error
    else:
        root = Path(path).expanduser()
        if root.is_dir():
            source = folder_cache(root, TEXT_SUFFIXES, max_bytes)
        elif root.is_file():
            source = root
        else:
            raise FileNotFoundError(f"path must be an existing file or folder, got {path!r}")
    size = source.stat().st_size
    return source, size if max_bytes is None else min(size, max_bytes)


def open_bytes(file: Path, length: int) -> np.ndarray:
    """The first ``length`` bytes of ``file`` as a read-only uint8 memmap."""
    if length == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.memmap(file, dtype=np.uint8, mode="r", shape=(length,))
