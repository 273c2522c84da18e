"""Pathfinder (Long Range Arena): are the two dots joined by one dashed path?"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from . import _args
from ._base import SeededDataModule
from ._seeding import TRAIN_STREAM, VAL_STREAM, StreamSamples
from .pathfinder_render import Canvas, render

IMAGE_SIZES = (32, 64, 128)


class PathfinderDataset(StreamSamples):
    """``num_samples`` images of one seed stream, drawn on demand."""

    def __init__(self, image_size: int, num_distractors: int, dash_length: int, num_samples: int,
                 seed: int, stream: int) -> None:
        super().__init__(num_samples, seed, stream)
        self.canvas = Canvas(image_size, dash_length)
        self.num_distractors = num_distractors

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        rng = self.rng(int(index))
        label = int(rng.integers(0, 2))
        image = render(rng, self.canvas, label, self.num_distractors)
        return {"inputs": torch.from_numpy(image).unsqueeze(0), "label": torch.tensor(label, dtype=torch.long)}


class PathfinderDataModule(SeededDataModule):
    """Procedurally drawn Pathfinder images (1 channel, 2 classes), generated on the fly.

    Each image shows two dots (small filled discs). Label 1: one dashed smooth curve
    joins them. Label 0: each dot is the end of a different curve. Either way there
    are ``num_distractors`` further curves (see :mod:`.pathfinder_render`).

    Args:
        image_size: height and width, one of 32, 64, 128.
        batch_size: samples per batch.
        train_samples: training set size; sample i is a pure function of (seed, i).
        val_samples: validation set size, from a seed stream disjoint from training.
        num_distractors: curves that touch neither dot.
        dash_length: pixels per dash (gaps are as long).
        seed: seeds the samples and the training order.
        num_workers: DataLoader worker processes.

    Batches: ``{"inputs": FloatTensor (B, 1, H, W) in [0, 1], "label": LongTensor (B,)}``.
    """

    def __init__(
        self,
        image_size: int = 32,
        batch_size: int = 16,
        train_samples: int = 2000,
        val_samples: int = 200,
        num_distractors: int = 4,
        dash_length: int = 2,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.image_size = _args.one_of("image_size", image_size, IMAGE_SIZES)
        self.train_samples = _args.positive_int("train_samples", train_samples)
        self.val_samples = _args.positive_int("val_samples", val_samples)
        self.num_distractors = _args.non_negative_int("num_distractors", num_distractors)
        self.dash_length = _args.positive_int("dash_length", dash_length)
        _args.at_most("dash_length", self.dash_length, "image_size // 8", self.image_size // 8)
        self.save_hyperparameters()

    @property
    def in_channels(self) -> int:
        return 1

    @property
    def num_classes(self) -> int:
        return 2

    def setup(self, stage: Optional[str] = None) -> None:
        config = (self.image_size, self.num_distractors, self.dash_length)
        self._train = PathfinderDataset(*config, self.train_samples, self.seed, TRAIN_STREAM)
        self._val = PathfinderDataset(*config, self.val_samples, self.seed, VAL_STREAM)
