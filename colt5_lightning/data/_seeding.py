"""Per-sample random generators, so sample ``i`` is a pure function of ``(seed, stream, i)``."""
from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

TRAIN_STREAM = 0
VAL_STREAM = 1


def sample_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """A generator for one sample; different streams (train / val) never share a sequence."""
    mask = 0xFFFFFFFF
    return np.random.default_rng([seed & mask, (seed >> 32) & mask, stream, index])


class StreamSamples(Dataset):
    """``num_samples`` samples of one seed stream, drawn on demand: subclasses turn
    ``self.rng(index)`` into sample ``index``."""

    def __init__(self, num_samples: int, seed: int, stream: int) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.stream = stream

    def __len__(self) -> int:
        return self.num_samples

    def rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample index {index} out of range [0, {self.num_samples})")
        return sample_rng(self.seed, self.stream, index)
