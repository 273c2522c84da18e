"""Run directories: every run writes its logs, config and checkpoints into a folder of its own.

    <root>/version_0/  config.yaml, hparams.yaml, metrics.csv, TensorBoard events, checkpoints/last.ckpt
    <root>/version_1/  ...

A new run claims the next free `version_N` with mkdir, which the file system grants to one
process only, so runs started at the same moment never share a folder. Resuming (`--ckpt_path
last`) starts from the last.ckpt of the newest folder that holds one (a run killed before its
first save has none, so `last` then means the run before it).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional

VERSION = re.compile(r"^version_(\d+)$")
LAST = Path("checkpoints") / "last.ckpt"
ENV = "COLT5_RUN_DIR"  # hands rank 0's folder to the worker processes Lightning launches


class RunDirError(OSError):
    """The runs' root folder cannot be created or written."""


def versions(root: os.PathLike) -> List[int]:
    """The N of every version_N folder in root, ascending; [] when root does not exist."""
    try:
        names = os.listdir(root)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = (VERSION.match(name) for name in names)
    return sorted(int(m.group(1)) for m in found if m and os.path.isdir(os.path.join(root, m.group(0))))


def claim_run_dir(root: os.PathLike) -> Path:
    """Creates and returns root/version_N for the smallest N above every existing one."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        raise RunDirError(f"trainer.default_root_dir {str(root)!r} cannot be created ({ex.strerror or ex}); "
                          "pass a writable folder with --trainer.default_root_dir") from None
    number = (versions(root) or [-1])[-1] + 1
    while True:
        run = root / f"version_{number}"
        try:
            run.mkdir()
            return run
        except FileExistsError:  # another run took it a moment ago
            number += 1
        except OSError as ex:
            raise RunDirError(f"cannot create the run folder {str(run)!r} ({ex.strerror or ex}); pass a "
                              "writable folder with --trainer.default_root_dir") from None


def newest_run_with_checkpoint(root: os.PathLike) -> Optional[Path]:
    """The highest-numbered root/version_N holding checkpoints/last.ckpt, or None."""
    for number in reversed(versions(root)):
        run = Path(root) / f"version_{number}"
        if (run / LAST).is_file():
            return run
    return None


def find_checkpoint(path: os.PathLike) -> Path:
    """A checkpoint file given as itself, as a run folder, or as a root of run folders (then its
    newest run's last.ckpt). Raises FileNotFoundError saying what was looked for."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint file or run folder at {path}")
    if (path / LAST).is_file():
        return path / LAST
    run = newest_run_with_checkpoint(path)
    if run is None:
        raise FileNotFoundError(f"{path} is a folder without {LAST} and without version_N run folders "
                                "that hold one")
    return run / LAST


RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "RANK",  # Lightning's launcher, torchrun
                  "SLURM_PROCID", "PMI_RANK", "OMPI_COMM_WORLD_RANK")  # srun, MPI launchers


def is_worker_process() -> bool:
    """A process started for a rank other than 0 (by Lightning, torchrun, srun or mpirun)."""
    return any(os.environ.get(name, "0") not in ("", "0") for name in RANK_VARIABLES)
