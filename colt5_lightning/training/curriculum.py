"""LengthCurriculum: train on short sequences first, longer ones once the short ones are solved.

Retrieval over long inputs is hard to start learning: at 4k tokens a randomly initialised
router rarely routes the needle, so neither the heavy branch nor the router gets a signal. At a
few hundred tokens the routed share is large, both learn, and the learned routing carries over
as the length grows.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Sequence

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


class StageGate:
    """When a curriculum moves on: once the mean of a logged training `metric` over the last `window`
    steps reaches `threshold`. `passed` takes one step's value and answers; the window starts afresh
    after each pass."""

    def __init__(self, metric: str, threshold: float, window: int):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
        if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
            raise ValueError(f"window must be a positive int, got {window!r}")
        self.metric, self.threshold, self.window = metric, float(threshold), window
        self.recent: deque = deque(maxlen=window)
        self.warned = False

    def passed(self, trainer: "pl.Trainer") -> bool:
        """Takes this step's value; True when the window's mean reaches the threshold. Under several
        processes rank 0 decides for all, so that every process moves on at the same step."""
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            if trainer.global_step > 0 and not self.warned:
                rank_zero_warn(f"the curriculum waits for {self.metric!r}, which this run does not log; it will "
                               f"not move on (logged: {sorted(trainer.callback_metrics)})")
                self.warned = True
            return False
        self.recent.append(float(value))
        passed = len(self.recent) == self.window and sum(self.recent) / self.window >= self.threshold
        if trainer.world_size > 1:
            passed = bool(trainer.strategy.broadcast(passed, src=0))
        if passed:
            self.recent.clear()
        return passed

    def state(self) -> list:
        return list(self.recent)

    def restore(self, recent: Sequence[float]) -> None:
        self.recent = deque(recent, maxlen=self.window)


class LengthCurriculum(pl.Callback):
    """Moves the DataModule's `train_len` through `lengths` (ascending; lengths beyond the data's
    seq_len are replaced by seq_len, with a message; those below its start_len are skipped) whenever the mean of `metric` over the last `window` training steps reaches
    `threshold`. Logs train/length every step; the state (stage and recent values) is saved
    in checkpoints, so a resumed run continues at the same length.

    `anneal_steps` > 0 lowers the learning rate once the last length is reached: the optimizer's
    rate (whatever its own schedule gives) is multiplied by a factor that follows a half cosine
    from 1 down to `anneal_to` over that many steps, then stays there. A curriculum does not know
    in advance when it will reach its last length, so a schedule fixed in steps cannot do this.
    """

    def __init__(self, lengths: Sequence[int], metric: str = "train/exact_acc", threshold: float = 0.9,
                 window: int = 50, anneal_steps: int = 0, anneal_to: float = 0.1):
        super().__init__()
        lengths = [int(x) for x in lengths]
        if not lengths or any(x <= 0 for x in lengths) or sorted(lengths) != lengths:
            raise ValueError(f"lengths must be a non-empty ascending list of positive ints, got {lengths}")
        if isinstance(anneal_steps, bool) or not isinstance(anneal_steps, int) or anneal_steps < 0:
            raise ValueError(f"anneal_steps must be a non-negative int (0: no annealing), got {anneal_steps!r}")
        if not 0 <= anneal_to <= 1:
            raise ValueError(f"anneal_to must lie in [0, 1], got {anneal_to}")
        self.lengths = lengths
        self.gate = StageGate(metric, threshold, window)
        self.anneal_steps, self.anneal_to = anneal_steps, float(anneal_to)
        self.final_since = None  # global step at which the last length was reached
        self.stage = 0

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
        if self.gate.passed(trainer) and self.stage + 1 < len(self.lengths):
            self.stage += 1
            self._datamodule(trainer).train_len = self.lengths[self.stage]
        if self.final_since is None and self.stage + 1 == len(self.lengths):
            self.final_since = trainer.global_step

    def lr_factor(self, step: int) -> float:
        """The multiplier on the learning rate at global step `step`."""
        if not self.anneal_steps or self.final_since is None:
            return 1.0
        progress = min(1.0, max(0, step - self.final_since) / self.anneal_steps)
        return self.anneal_to + (1.0 - self.anneal_to) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # the LR scheduler sets each group's rate afresh at every step, so scaling here never compounds
        factor = self.lr_factor(trainer.global_step)
        if factor != 1.0:
            for group in optimizer.param_groups:
                group["lr"] *= factor
        pl_module.log("train/lr_factor", factor, on_step=True, on_epoch=False)

    def state_dict(self) -> dict:
        return {"stage": self.stage, "recent": self.gate.state(), "final_since": self.final_since}

    def load_state_dict(self, state_dict: dict) -> None:
        self.stage = int(state_dict["stage"])
        self.gate.restore(state_dict["recent"])
        self.final_since = state_dict.get("final_since")
