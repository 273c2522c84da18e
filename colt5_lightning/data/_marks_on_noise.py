"""What the marks-on-noise tasks share (matching marks, mark colour): maps of Gaussian noise with
one channel per colour, marks that add +1 in their colour's channel, and the arguments that size
them. Each task draws its marks and labels in its own ``MarksDataset.__getitem__``."""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import _args
from ._base import SeededDataModule
from ._seeding import TRAIN_STREAM, VAL_STREAM, StreamSamples


def noise_map(rng: np.random.Generator, channels: int, size: int, noise: float) -> np.ndarray:
    """(channels, size, size) float32 Gaussian background with standard deviation noise."""
    return (rng.standard_normal((channels, size, size)) * noise).astype(np.float32)


class MarksDataset(StreamSamples):
    """``num_samples`` maps of one seed stream, drawn on demand."""

    def __init__(self, image_size: int, num_colors: int, min_distance: int, noise: float, num_samples: int,
                 seed: int, stream: int) -> None:
        super().__init__(num_samples, seed, stream)
        self.image_size = image_size
        self.num_colors = num_colors
        self.min_distance = min_distance
        self.noise = noise


class MarksDataModule(SeededDataModule):
    """The shared arguments and setup; subclasses set ``dataset_class`` (a MarksDataset with its
    own ``__getitem__``) and ``num_classes``, and document the arguments (see
    MatchingMarksDataModule)."""

    dataset_class: type = None

    def __init__(
        self,
        image_size: int = 16,
        num_colors: int = 8,
        min_distance: int = 8,
        noise: float = 0.2,
        batch_size: int = 32,
        train_samples: int = 1_000_000,
        val_samples: int = 1000,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        if self.dataset_class is None:
            raise TypeError(f"{type(self).__name__} draws no maps: use MatchingMarksDataModule or MarkColourDataModule")
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.image_size = _args.int_at_least("image_size", image_size, 2, "two pixels at least 1 apart")
        self.num_colors = _args.int_at_least("num_colors", num_colors, 2, "with one, colour says nothing")
        self.min_distance = _args.positive_int("min_distance", min_distance)
        _args.at_most("min_distance", self.min_distance, "image_size - 1", self.image_size - 1)
        self.noise = _args.finite_non_negative("noise", noise)
        self.train_samples = _args.positive_int("train_samples", train_samples)
        self.val_samples = _args.positive_int("val_samples", val_samples)
        self.save_hyperparameters()

    @property
    def in_channels(self) -> int:
        return self.num_colors

    def setup(self, stage: Optional[str] = None) -> None:
        config = (self.image_size, self.num_colors, self.min_distance, self.noise)
        self._train = self.dataset_class(*config, self.train_samples, self.seed, TRAIN_STREAM)
        self._val = self.dataset_class(*config, self.val_samples, self.seed, VAL_STREAM)
