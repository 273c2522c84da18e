"""Mark colour: which colour is the one mark on a noisy feature map, read out far away from it?

A task whose evidence lies outside the readout's local window by construction, with a first-order
signal for a router: the answer is read at the map's top-left pixel (``readout = "corner"``), and
the single mark lies at least ``min_distance`` pixels from it along rows or columns, so a model that
only mixes pixels inside tiles of that size (or smaller) never brings the mark to the readout.
Unlike matching marks, routing the mark alone is enough to answer.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from ._marks_on_noise import MarksDataModule, MarksDataset, noise_map


def position_far_from_corner(rng: np.random.Generator, image_size: int, min_distance: int) -> tuple:
    """Row, column of a pixel at a Chebyshev distance of at least min_distance from (0, 0), uniform
    over such pixels (rejection sampling; min_distance ≤ image_size - 1 keeps it possible)."""
    while True:
        row, col = (int(v) for v in rng.integers(0, image_size, size=2))
        if max(row, col) >= min_distance:
            return row, col


class MarkColourDataset(MarksDataset):
    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        rng = self.rng(int(index))
        colour = int(rng.integers(0, self.num_colors))
        size = self.image_size
        image = noise_map(rng, self.num_colors, size, self.noise)
        row, col = position_far_from_corner(rng, size, self.min_distance)
        image[colour, row, col] += 1.0
        route_mask = np.zeros((size, size), dtype=bool)
        route_mask[row, col] = route_mask[0, 0] = True  # the evidence and the pixel that reads it
        return {"inputs": torch.from_numpy(image), "label": torch.tensor(colour, dtype=torch.long),
                "route_mask": torch.from_numpy(route_mask.reshape(-1))}


class MarkColourDataModule(MarksDataModule):
    """Feature maps with one mark far from the top-left pixel; the label is the mark's colour.

    Each map has ``num_colors`` channels of Gaussian noise (std ``noise``). One pixel at a
    Chebyshev distance of at least ``min_distance`` from the top-left pixel carries a mark: +1 in
    the channel of its colour; the label is that colour (chance 1 / num_colors). The model reads
    its answer at the top-left pixel (``readout``, linked to the image classifier), so with
    ``min_distance`` at least the light branch's tile size only routed (or dense) attention can
    bring the mark there.

    Args:
        image_size: height and width of the map.
        num_colors: colours, one channel each (at least 2); the classes.
        min_distance: least Chebyshev distance between the mark and the top-left pixel
            (1 to image_size - 1).
        noise: standard deviation of the background noise (≥ 0).
        batch_size: samples per batch.
        train_samples: training set size; sample i is a pure function of (seed, i).
        val_samples: validation set size, from a seed stream disjoint from training.
        seed: seeds the samples and the training order.
        num_workers: DataLoader worker processes.

    Batches: ``{"inputs": FloatTensor (B, num_colors, H, W), "label": LongTensor (B,),
    "route_mask": BoolTensor (B, H * W)}``; ``route_mask`` marks the marked pixel and the
    top-left readout pixel in the flattened map, the tokens an oracle router would pick when the
    model's patch size is 1 (the readout as a query, the mark as a key/value). So a key/value
    router that always routes the mark, and never the readout, has an oracle recall of 0.5.
    """

    dataset_class = MarkColourDataset
    readout = "corner"

    @property
    def num_classes(self) -> int:
        return self.num_colors
