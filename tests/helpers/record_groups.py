"""A callback for subprocess tests: writes each rank's optimizer groups (parameter counts and
weight decay) and its training losses, by step, to a JSON file."""
import json
from pathlib import Path

import lightning.pytorch as pl


class RecordOptimizerGroups(pl.Callback):
    def __init__(self, path: str):
        self.path = path
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)
        self.losses.append([trainer.global_step - 1, loss])  # the step this loss was trained on

    def on_train_end(self, trainer, pl_module):
        groups = [{"params": len(g["params"]), "weight_decay": g["weight_decay"]}
                  for g in trainer.optimizers[0].param_groups]
        Path(f"{self.path}.rank{trainer.global_rank}").write_text(json.dumps({"groups": groups, "losses": self.losses}))
