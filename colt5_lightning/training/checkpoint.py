"""LastCheckpoint: ModelCheckpoint whose last.ckpt is always the state training ended in."""
from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint writes last.ckpt at the end of training only if it never
    wrote one before; with periodic saves (every_n_train_steps) a run stopped by max_time or
    early stopping would end with a last.ckpt up to N steps old. This one writes it again when
    the last save is older than the final step."""

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = trainer.global_step
        else:
            super().on_train_end(trainer, pl_module)
