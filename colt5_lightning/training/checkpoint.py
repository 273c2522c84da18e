"""LastCheckpoint: ModelCheckpoint whose last.ckpt is always the newest good state of the run.

On top of Lightning's ModelCheckpoint it
- checks at setup, before step 1, that the checkpoint folder can be written;
- writes every checkpoint atomically (a `.partial` file in the same folder, then a rename), so
  a process killed mid-save leaves the previous checkpoint whole;
- rewrites last.ckpt at the end of training when the last periodic save is older than the
  final step (Lightning skips it: a run stopped by max_time ended 77 steps behind);
- saves on SIGTERM, SIGINT and other exceptions, but never over the last good checkpoint when
  training stopped because its loss or weights went non-finite;
- with keep_previous (the default), keeps the checkpoint a save replaces as previous.ckpt beside
  it (a hard link, then an atomic rename: both names always hold whole checkpoints), so a
  last.ckpt damaged from outside the kit still leaves one to resume from (see
  `resumable_checkpoint`).
"""
from __future__ import annotations

import os
import pickle
import shutil
import uuid
from typing import Optional, Tuple

import torch

import lightning.pytorch as pl
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from .._checks import NonFiniteError


class CheckpointDirError(OSError):
    """The checkpoint folder cannot be created or written."""


PREVIOUS = "previous.ckpt"


class LastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint with the guarantees listed in the module docstring. keep_previous: keep the
    checkpoint each save replaces as previous.ckpt in the same folder (twice the disk)."""

    PARTIAL_SUFFIX = ".partial"

    def __init__(self, *args, keep_previous: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep_previous = bool(keep_previous)

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit" or not _is_local_file_protocol(str(self.dirpath)):
            return
        problem = None
        if trainer.is_global_zero:
            try:
                check_writable(str(self.dirpath))
            except CheckpointDirError as ex:
                problem = str(ex)
        problem = trainer.strategy.broadcast(problem)  # every process stops, none waits at a barrier
        if problem is not None:
            raise CheckpointDirError(problem)

    def _save_checkpoint(self, trainer: "pl.Trainer", filepath: str) -> None:
        if not _is_local_file_protocol(str(filepath)):
            return super()._save_checkpoint(trainer, filepath)
        partial = f"{filepath}{self.PARTIAL_SUFFIX}"
        super()._save_checkpoint(trainer, partial)
        if trainer.is_global_zero:
            if os.path.isdir(partial) and os.path.isdir(filepath):  # a sharded checkpoint is a folder
                shutil.rmtree(filepath)
            elif self.keep_previous and os.path.isfile(filepath):
                keep_as_previous(filepath)
            os.replace(partial, filepath)
        trainer.strategy.barrier("LastCheckpoint.rename")
        self._last_checkpoint_saved = filepath

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        if trainer.fast_dev_run:
            return  # a dry run saves nothing, as Lightning's own saves do not
        if isinstance(exception, (NonFiniteError, CheckpointDirError)):
            return  # the weights are not worth saving, or there is nowhere to save them
        if self.save_top_k != 0 or not self.save_last:
            return super().on_exception(trainer, pl_module, exception)
        if self._should_save_on_exception(trainer):  # only last.ckpt: no step-named file beside it
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            rank_zero_info(f"{type(exception).__name__} at step {trainer.global_step}: saved {self.last_model_path}")

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.fast_dev_run:
            return
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = trainer.global_step
        else:
            super().on_train_end(trainer, pl_module)


def check_writable(dirpath: str) -> None:
    """Creates dirpath and writes a probe file in it, or raises CheckpointDirError naming it."""
    probe = os.path.join(dirpath, f".write-test-{uuid.uuid4().hex}")
    try:
        os.makedirs(dirpath, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.remove(probe)
    except OSError as ex:
        raise CheckpointDirError(f"checkpoint.dirpath {dirpath!r} cannot be written ({ex.strerror or ex}); "
                                 "pass a writable folder with --checkpoint.dirpath") from ex


def keep_as_previous(filepath: str) -> None:
    """Makes previous.ckpt (beside filepath) the checkpoint filepath holds now, without a moment in
    which either name is missing or half written: a hard link under a temporary name, renamed over
    previous.ckpt. Where hard links are not supported, nothing is kept."""
    previous = os.path.join(os.path.dirname(filepath), PREVIOUS)
    staging = f"{previous}.{uuid.uuid4().hex}.partial"
    try:
        os.link(filepath, staging)
        os.replace(staging, previous)
    except OSError:
        if os.path.exists(staging):
            os.remove(staging)


# what torch.load raises for a truncated, empty or foreign file
READ_ERRORS = (RuntimeError, EOFError, OSError, ValueError, AttributeError, pickle.UnpicklingError)


def read_checkpoint(path: str) -> dict:
    """The checkpoint at `path`, memory-mapped; raises one of READ_ERRORS when it is damaged."""
    return torch.load(path, map_location="cpu", weights_only=False, mmap=True)


def readable(path: str) -> Optional[Exception]:
    """None when `path` loads as a checkpoint, else the error that loading it raised."""
    try:
        read_checkpoint(path)
    except READ_ERRORS as ex:
        return ex
    return None


def resumable_checkpoint(last: str) -> Tuple[str, Optional[Exception]]:
    """(the file to resume from, the error that ruled out last.ckpt or None): last.ckpt when it
    loads, else previous.ckpt beside it when that one loads, else last.ckpt and its error."""
    problem = readable(last)
    if problem is None:
        return last, None
    previous = os.path.join(os.path.dirname(last), PREVIOUS)
    if os.path.isfile(previous) and readable(previous) is None:
        return previous, problem
    return last, problem
