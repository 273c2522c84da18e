"""RandomStateCheckpoint: a resumed run draws the random numbers an uninterrupted one would.

Lightning restores weights, optimizer, schedule and loop counters, but not the random
generators, so after a resume router score noise (and anything else random in training) takes
new values. This callback saves the generators' states with every checkpoint and puts them back
just before the first training batch of the resumed run. With the data order resumed by the
DataModules' samplers, losses then match an uninterrupted run step for step on CPU.

Each process restores the states that the checkpoint holds, which are rank 0's. Under DDP that is
exact: every process is seeded alike and draws alike (the same shapes), so the processes'
generators coincide in an uninterrupted run too (tests/test_fault_tolerance.py checks both ranks'
losses after a resume).
"""
from __future__ import annotations

import random
from typing import Optional

import lightning.pytorch as pl
import numpy as np
import torch


class RandomStateCheckpoint(pl.Callback):
    """Saves torch (CPU and CUDA), NumPy and Python generator states; restores them on resume."""

    def __init__(self) -> None:
        self._pending: Optional[dict] = None

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict  # applied at the first batch: restoring happens before setup draws

    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch,
                             batch_idx: int) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
