"""Matching marks: do two far-apart marks on a noisy feature map have the same colour?

A task whose evidence lies outside any local window by construction: the two marks are at least
``min_distance`` pixels apart along rows or columns, so no tile of that size (or smaller) holds
both, and a model that only mixes pixels inside tiles never sees the two colours together.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

from . import _args
from ._base import SeededDataModule
from ._seeding import TRAIN_STREAM, VAL_STREAM, StreamSamples


def far_apart_positions(rng: np.random.Generator, image_size: int, min_distance: int) -> np.ndarray:
    """(2, 2) row, column of two pixels whose Chebyshev distance is at least min_distance, uniform over
    such pairs (rejection sampling; min_distance ≤ image_size - 1 keeps it possible)."""
    while True:
        positions = rng.integers(0, image_size, size=(2, 2))
        if np.abs(positions[0] - positions[1]).max() >= min_distance:
            return positions


def noise_map(rng: np.random.Generator, channels: int, size: int, noise: float) -> np.ndarray:
    """(channels, size, size) float32 Gaussian background with standard deviation noise."""
    return (rng.standard_normal((channels, size, size)) * noise).astype(np.float32)


class MatchingMarksDataset(StreamSamples):
    """``num_samples`` maps of one seed stream, drawn on demand."""

    def __init__(self, image_size: int, num_colors: int, min_distance: int, noise: float, num_samples: int,
                 seed: int, stream: int) -> None:
        super().__init__(num_samples, seed, stream)
        self.image_size = image_size
        self.num_colors = num_colors
        self.min_distance = min_distance
        self.noise = noise

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        rng = self.rng(int(index))
        label = int(rng.integers(0, 2))
        first = int(rng.integers(0, self.num_colors))
        # the second colour: the first one, or any other with equal chance
        second = first if label else (first + int(rng.integers(1, self.num_colors))) % self.num_colors
        size = self.image_size
        image = noise_map(rng, self.num_colors, size, self.noise)
        route_mask = np.zeros((size, size), dtype=bool)
        for (row, col), color in zip(far_apart_positions(rng, size, self.min_distance), (first, second)):
            image[color, row, col] += 1.0
            route_mask[row, col] = True
        return {"inputs": torch.from_numpy(image), "label": torch.tensor(label, dtype=torch.long),
                "route_mask": torch.from_numpy(route_mask.reshape(-1))}


class MatchingMarksDataModule(SeededDataModule):
    """Feature maps with two marks far apart; the label says whether their colours match.

    Each map has ``num_colors`` channels of Gaussian noise (std ``noise``). Two pixels at a
    Chebyshev distance of at least ``min_distance`` carry a mark: +1 in the channel of their colour.
    Label 1 (half the samples): both marks have the same colour; label 0: different colours.
    Each colour alone says nothing about the label, so a model must bring the two marks together:
    with ``min_distance`` at least the light branch's tile size, only routed (or dense) attention can.

    Args:
        image_size: height and width of the map.
        num_colors: colours, one channel each (at least 2).
        min_distance: least Chebyshev distance between the marks (1 to image_size - 1).
        noise: standard deviation of the background noise (≥ 0).
        batch_size: samples per batch.
        train_samples: training set size; sample i is a pure function of (seed, i).
        val_samples: validation set size, from a seed stream disjoint from training.
        seed: seeds the samples and the training order.
        num_workers: DataLoader worker processes.

    Batches: ``{"inputs": FloatTensor (B, num_colors, H, W), "label": LongTensor (B,),
    "route_mask": BoolTensor (B, H * W)}``; ``route_mask`` marks the two marked pixels in the
    flattened map, the tokens an oracle router would pick (routing by hand, oracle recall) when the
    model's patch size is 1.
    """

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
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.image_size = _args.int_at_least("image_size", image_size, 2, "two marks")
        self.num_colors = _args.int_at_least("num_colors", num_colors, 2, "with one, every pair matches")
        self.min_distance = _args.positive_int("min_distance", min_distance)
        _args.at_most("min_distance", self.min_distance, "image_size - 1", self.image_size - 1)
        self.noise = _args.finite_non_negative("noise", noise)
        self.train_samples = _args.positive_int("train_samples", train_samples)
        self.val_samples = _args.positive_int("val_samples", val_samples)
        self.save_hyperparameters()

    @property
    def in_channels(self) -> int:
        return self.num_colors

    @property
    def num_classes(self) -> int:
        return 2

    def setup(self, stage: Optional[str] = None) -> None:
        config = (self.image_size, self.num_colors, self.min_distance, self.noise)
        self._train = MatchingMarksDataset(*config, self.train_samples, self.seed, TRAIN_STREAM)
        self._val = MatchingMarksDataset(*config, self.val_samples, self.seed, VAL_STREAM)
