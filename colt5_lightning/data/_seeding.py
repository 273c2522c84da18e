"""Per-sample random generators, so sample ``i`` is a pure function of ``(seed, stream, i)``."""
from __future__ import annotations

import numpy as np

TRAIN_STREAM = 0
VAL_STREAM = 1


def sample_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """A generator for one sample; different streams (train / val) never share a sequence."""
    mask = 0xFFFFFFFF
    return np.random.default_rng([seed & mask, (seed >> 32) & mask, stream, index])
