"""The settings every data module in this package shares: batch size, workers, seed."""
from __future__ import annotations

from typing import Iterator, Optional

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import _args


class ResumableSampler(DistributedSampler):
    """A sampler whose indices for an epoch are a pure function of (seed, epoch), and which can
    skip the start of its next pass: how a resumed run continues an epoch where its checkpoint
    left it, instead of replaying the first batches. Lightning calls `set_epoch` at each epoch
    start (without it the epoch advances after every pass). `len` stays the whole epoch's, so
    Lightning's batch counters, restored from the checkpoint, end the epoch where they should.

    Under data parallelism it shards itself (`shard`): process `rank` of `num_replicas` takes every
    num_replicas-th index of the epoch's order (padded from its start to a whole number per
    process, as torch's DistributedSampler does). Being a DistributedSampler, Lightning does not
    wrap it in one that knows nothing of skipping. Subclasses give `indices_for_epoch` and
    `num_total`, the indices of one epoch across all processes."""

    def __init__(self, seed: int) -> None:  # DistributedSampler's own __init__ needs a process group
        self.seed = seed
        self.epoch = 0
        self.skip = 0
        self.num_replicas, self.rank = 1, 0

    def shard(self, num_replicas: int, rank: int) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must lie in [0, num_replicas={num_replicas}), got {rank}")
        self.num_replicas, self.rank = num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices_for_epoch(self, epoch: int) -> torch.Tensor:
        raise NotImplementedError

    @property
    def num_total(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        indices = self.indices_for_epoch(self.epoch)
        if self.num_replicas > 1 and len(indices):
            padded = len(self) * self.num_replicas  # repeated from the start, as often as it takes
            indices = indices.repeat(-(-padded // len(indices)))[:padded][self.rank::self.num_replicas]
        indices = indices[self.skip:]
        self.skip = 0
        self.epoch += 1
        return iter(indices.tolist())

    def __len__(self) -> int:
        return -(-self.num_total // self.num_replicas)


class EpochShuffle(ResumableSampler):
    """A permutation of range(n) per epoch: the one a DataLoader with shuffle=True and a generator
    seeded with `seed` gives in that epoch, so seeded runs keep the order they had before this
    sampler existed. (Per epoch that loader drew a base seed for its iterator, a permutation, and
    an empty remainder permutation from its generator; the draws are replayed here.)"""

    def __init__(self, num_indices: int, seed: int) -> None:
        super().__init__(seed)
        self.num_indices = num_indices

    def indices_for_epoch(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(epoch + 1):
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            order = torch.randperm(self.num_indices, generator=generator)
            torch.randperm(self.num_indices, generator=generator)
        return order

    @property
    def num_total(self) -> int:
        return self.num_indices


class SeededDataModule(pl.LightningDataModule):
    """Holds ``batch_size``, ``num_workers`` and ``seed`` and builds the data loaders.

    Subclasses build ``self._train`` and ``self._val`` in ``setup``. Training order comes from a
    ResumableSampler seeded with ``seed`` (EpochShuffle unless a subclass brings its own); a run
    resumed mid-epoch skips the batches its checkpoint had already trained on. Validation is never
    shuffled, so the validation batches are identical every epoch and every run.
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

    def _loader(self, dataset: Dataset, *, shuffle: bool, sampler: Optional[ResumableSampler] = None) -> DataLoader:
        # a loader draws a base seed from its generator for every iterator it makes: its own, so that
        # validation and new epochs never advance torch's global generator (router noise draws from
        # that, and a resumed run must draw what an uninterrupted one did)
        generator = torch.Generator().manual_seed(self.seed)
        if shuffle:
            sampler = EpochShuffle(len(dataset), self.seed) if sampler is None else sampler
            sampler.skip = self._samples_done_in_epoch()
            if self.trainer is not None:  # workers fetch before Lightning's set_epoch reaches them
                sampler.set_epoch(self.trainer.current_epoch)
                sampler.shard(self.trainer.world_size, self.trainer.global_rank)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _samples_done_in_epoch(self) -> int:
        """Training samples of the current epoch that a checkpoint being resumed had already trained
        on, per process: non-zero only while a fit restarts mid-epoch (Lightning has restored its
        counters by the time it builds the loader)."""
        trainer = self.trainer
        if trainer is None or not trainer.fit_loop.restarting:
            return 0
        progress = trainer.fit_loop.epoch_loop.batch_progress
        if progress.is_last_batch:  # saved at the end of an epoch: the next one starts afresh
            return 0
        return progress.current.processed * self.batch_size

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._require(self._train, "training"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require(self._val, "validation"), shuffle=False)
