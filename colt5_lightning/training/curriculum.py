"""LengthCurriculum: train on short sequences first, longer ones once the short ones are solved.

Retrieval over long inputs is hard to start learning: at 4k tokens a randomly initialised
router rarely routes the needle, so neither the heavy branch nor the router gets a signal. At a
few hundred tokens the routed share is large, both learn, and the learned routing carries over
as the length grows.
"""
from __future__ import annotations

from collections import deque
from typing import Sequence

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info


class LengthCurriculum(pl.Callback):
    """Moves the DataModule's `train_len` through `lengths` (ascending; lengths beyond the data's
    seq_len are replaced by seq_len, with a message; those below its start_len are skipped) whenever the mean of `metric` over the last `window` training steps reaches
    `threshold`. Logs train/length every step; the state (stage and recent values) is saved
    in checkpoints, so a resumed run continues at the same length."""

    def __init__(self, lengths: Sequence[int], metric: str = "train/exact_acc", threshold: float = 0.9,
                 window: int = 50):
        super().__init__()
        lengths = [int(x) for x in lengths]
        if not lengths or any(x <= 0 for x in lengths) or sorted(lengths) != lengths:
            raise ValueError(f"lengths must be a non-empty ascending list of positive ints, got {lengths}")
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
        if window <= 0:
            raise ValueError(f"window must be a positive int, got {window}")
        self.lengths, self.metric, self.threshold, self.window = lengths, metric, threshold, window
        self.stage = 0
        self.recent: deque = deque(maxlen=window)

    def _datamodule(self, trainer: "pl.Trainer"):
        data = trainer.datamodule
        if data is None or not hasattr(type(data), "train_len"):
            raise TypeError("LengthCurriculum needs a DataModule with a settable train_len "
                            "(e.g. PasskeyReadoutDataModule)")
        return data

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        data = self._datamodule(trainer)
        if self.lengths[-1] > data.seq_len:  # e.g. a shortened smoke run of a long recipe
            kept = [x for x in self.lengths if x < data.seq_len] + [data.seq_len]
            rank_zero_info(f"LengthCurriculum: lengths {self.lengths} exceed the data's seq_len {data.seq_len}; "
                           f"using {kept}")
            self.lengths = kept
            self.stage = min(self.stage, len(kept) - 1)
        while self.stage + 1 < len(self.lengths) and self.lengths[self.stage] < data.start_len:
            self.stage += 1  # lengths below the data's start_len are skipped
        data.train_len = self.lengths[self.stage]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.log("train/length", float(self.lengths[self.stage]), on_step=True, on_epoch=False)
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            return
        self.recent.append(float(value))
        if (self.stage + 1 < len(self.lengths) and len(self.recent) == self.window
                and sum(self.recent) / self.window >= self.threshold):
            self.stage += 1
            self.recent.clear()
            self._datamodule(trainer).train_len = self.lengths[self.stage]

    def state_dict(self) -> dict:
        return {"stage": self.stage, "recent": list(self.recent)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.stage = int(state_dict["stage"])
        self.recent = deque(state_dict["recent"], maxlen=self.window)
