"""The settings every data module in this package shares: batch size, workers, seed."""
from __future__ import annotations

from typing import Optional

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from . import _args


class SeededDataModule(pl.LightningDataModule):
    """Holds ``batch_size``, ``num_workers`` and ``seed`` and builds the data loaders.

    Subclasses build ``self._train`` and ``self._val`` in ``setup``. Training order
    is shuffled by a generator seeded with ``seed``; validation is never shuffled, so
    the validation batches are identical every epoch and every run.
    """

    def __init__(self, batch_size: int, seed: int, num_workers: int) -> None:
        super().__init__()
        self.batch_size = _args.positive_int("batch_size", batch_size)
        self.seed = _args.int_seed("seed", seed)
        self.num_workers = _args.non_negative_int("num_workers", num_workers)
        self._train: Optional[Dataset] = None
        self._val: Optional[Dataset] = None

    def _require(self, dataset: Optional[Dataset], split: str) -> Dataset:
        if dataset is None:
            raise RuntimeError(
                f"{type(self).__name__} has no {split} set yet: call setup('fit') first"
            )
        return dataset

    def _loader(self, dataset: Dataset, *, shuffle: bool, sampler: Optional[Sampler] = None) -> DataLoader:
        generator = None
        if shuffle and sampler is None:
            generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._require(self._train, "training"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require(self._val, "validation"), shuffle=False)
