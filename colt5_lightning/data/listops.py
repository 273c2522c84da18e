"""ListOps (Long Range Arena): classify the value 0-9 of a long nested list expression."""
from __future__ import annotations

from typing import Dict, List, Optional

import torch

from . import _args
from ._base import SeededDataModule
from ._seeding import TRAIN_STREAM, VAL_STREAM, StreamSamples
from .listops_grammar import (
    MIN_LIST_TOKENS,
    NUM_CLASSES,
    PAD_ID,
    VOCAB,
    decode,
    encode,
    evaluate,
    generate,
    tokenize,
    to_text,
)

__all__ = ["ListOpsDataModule", "ListOpsDataset", "evaluate", "tokenize", "to_text", "encode", "decode", "VOCAB"]


class ListOpsDataset(StreamSamples):
    """``num_samples`` expressions of one seed stream, generated on demand and padded to ``max_length``."""

    def __init__(self, min_length: int, max_length: int, max_depth: int, num_samples: int, seed: int, stream: int) -> None:
        super().__init__(num_samples, seed, stream)
        self.min_length = min_length
        self.max_length = max_length
        self.max_depth = max_depth

    def tokens(self, index: int) -> List[str]:
        """Sample ``index`` as token strings: a pure function of (seed, stream, index)."""
        return generate(self.rng(index), self.min_length, self.max_length, self.max_depth)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        tokens = self.tokens(int(index))
        inputs = torch.full((self.max_length,), PAD_ID, dtype=torch.long)
        inputs[: len(tokens)] = torch.tensor(encode(tokens), dtype=torch.long)
        mask = torch.zeros(self.max_length, dtype=torch.bool)
        mask[: len(tokens)] = True
        return {"inputs": inputs, "mask": mask, "label": torch.tensor(evaluate(tokens), dtype=torch.long)}


class ListOpsDataModule(SeededDataModule):
    """LRA ListOps, generated on the fly (10 classes).

    Operators MIN, MAX, MED (lower median: ``sorted(args)[(len(args) - 1) // 2]``) and
    SM (sum mod 10) over digits 0-9, nested at most ``max_depth`` deep. Vocabulary:
    pad=0, digits "0".."9" = 1..10, MIN, MAX, MED, SM = 11..14, "[" = 15, "]" = 16.

    Args:
        min_length, max_length: token count of every expression lies in this range
            (``[MAX`` counts as two tokens). Inputs are padded to ``max_length``.
        max_depth: deepest list nesting (1 = a flat list of digits).
        batch_size: samples per batch.
        train_samples: training set size; sample i is a pure function of (seed, i).
        val_samples: validation set size, from a seed stream disjoint from training.
        seed: seeds the samples and the training order.
        num_workers: DataLoader worker processes.

    Batches: ``{"inputs": LongTensor (B, max_length), "mask": BoolTensor (B, max_length)
    (True = real token), "label": LongTensor (B,)}``.
    """

    def __init__(
        self,
        min_length: int = 500,
        max_length: int = 2000,
        max_depth: int = 10,
        batch_size: int = 8,
        train_samples: int = 2000,
        val_samples: int = 200,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.min_length = _args.positive_int("min_length", min_length)
        if self.min_length < MIN_LIST_TOKENS:
            raise ValueError(
                f"min_length must be at least {MIN_LIST_TOKENS} (the shortest list '[ OP d ]'), got {min_length}"
            )
        self.max_length = _args.positive_int("max_length", max_length)
        if self.max_length < self.min_length:
            raise ValueError(f"max_length ({max_length}) must be at least min_length ({min_length})")
        self.max_depth = _args.positive_int("max_depth", max_depth)
        self.train_samples = _args.positive_int("train_samples", train_samples)
        self.val_samples = _args.positive_int("val_samples", val_samples)
        self.save_hyperparameters()

    @property
    def vocab_size(self) -> int:
        return len(VOCAB)

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    @property
    def seq_len(self) -> int:
        return self.max_length

    def setup(self, stage: Optional[str] = None) -> None:
        config = (self.min_length, self.max_length, self.max_depth)
        self._train = ListOpsDataset(*config, self.train_samples, self.seed, TRAIN_STREAM)
        self._val = ListOpsDataset(*config, self.val_samples, self.seed, VAL_STREAM)
