"""The progress bar of step-based runs: "Epoch 0/-2" becomes "Epoch 0 · step ≤ 600"."""
from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class StepsProgressBar(RichProgressBar):
    """RichProgressBar whose training description names the step limit when max_epochs does not
    bound the run (Lightning sets it to -1 when max_steps does)."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}" + (f" · to step {trainer.max_steps}" if trainer.max_steps > 0 else "")
        return f"{description:{len(self.validation_description)}}"
