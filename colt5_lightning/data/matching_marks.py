"""Matching marks: do two far-apart marks on a noisy feature map have the same colour?

A task whose evidence lies outside any local window by construction: the two marks are at least
``min_distance`` pixels apart along rows or columns, so no tile of that size (or smaller) holds
both, and a model that only mixes pixels inside tiles never sees the two colours together.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from ._marks_on_noise import MarksDataModule, MarksDataset, noise_map


def far_apart_positions(rng: np.random.Generator, image_size: int, min_distance: int) -> np.ndarray:
    """(2, 2) row, column of two pixels whose Chebyshev distance is at least min_distance, uniform over
    such pairs (rejection sampling; min_distance ≤ image_size - 1 keeps it possible)."""
    while True:
        positions = rng.integers(0, image_size, size=(2, 2))
        if np.abs(positions[0] - positions[1]).max() >= min_distance:
            return positions


class MatchingMarksDataset(MarksDataset):
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


class MatchingMarksDataModule(MarksDataModule):
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

    dataset_class = MatchingMarksDataset

    @property
    def num_classes(self) -> int:
        return 2
