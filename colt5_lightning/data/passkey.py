"""Passkey retrieval: find a number hidden at a random depth in long filler text.

Each sample is ``seq_len + 1`` bytes: filler sentences with the needle
``"The pass key is K. Remember it. K is the pass key. "`` inserted at a random
sentence boundary, ending exactly with ``"What is the pass key? The pass key is K"``.
Only the positions that predict the digits of that final K are scored.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional

import torch
from torch.utils.data import Dataset

from . import _args, byte_codec
from ._base import SeededDataModule
from .byte_codec import ByteVocabulary
from ._seeding import TRAIN_STREAM, VAL_STREAM, sample_rng

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
IGNORE_INDEX = -100


def needle(key: str) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key. "


def question(key: str) -> str:
    return f"What is the pass key? The pass key is {key}"


def min_seq_len(key_digits: int) -> int:
    """The shortest ``seq_len`` that fits the needle and the question with no filler."""
    key = "0" * key_digits
    return len(needle(key)) + len(question(key)) - 1


def filler_text(length: int) -> str:
    """``length`` bytes of filler that end on a sentence boundary (they may start mid-sentence)."""
    repeats = length // len(FILLER) + 1
    return (FILLER * repeats)[len(FILLER) * repeats - length :]


def sentence_starts(text: str) -> list:
    """Positions where a sentence of ``text`` starts, plus 0 and ``len(text)``."""
    starts = {0, len(text)}
    starts.update(i + 2 for i in range(len(text) - 1) if text[i : i + 2] == ". ")
    return sorted(starts)


class PasskeySample(NamedTuple):
    text: str
    key: str
    depth: int  # byte offset of the needle in ``text``


def make_sample(seq_len: int, key_digits: int, seed: int, stream: int, index: int) -> PasskeySample:
    """Sample ``index`` of ``stream`` for ``seed``: a pure function of its arguments."""
    rng = sample_rng(seed, stream, index)
    key = "".join(str(d) for d in rng.integers(0, 10, size=key_digits))
    fill = filler_text(seq_len + 1 - len(needle(key)) - len(question(key)))
    starts = sentence_starts(fill)
    depth = starts[int(rng.integers(0, len(starts)))]
    text = fill[:depth] + needle(key) + fill[depth:] + question(key)
    return PasskeySample(text, key, depth)


class PasskeyDataset(Dataset):
    """``num_samples`` passkey samples of one seed stream, generated on demand."""

    def __init__(self, seq_len: int, key_digits: int, num_samples: int, seed: int, stream: int) -> None:
        self.seq_len = seq_len
        self.key_digits = key_digits
        self.num_samples = num_samples
        self.seed = seed
        self.stream = stream

    def __len__(self) -> int:
        return self.num_samples

    def sample(self, index: int) -> PasskeySample:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample index {index} out of range [0, {self.num_samples})")
        return make_sample(self.seq_len, self.key_digits, self.seed, self.stream, index)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        ids = byte_codec.encode(self.sample(int(index)).text)
        targets = torch.full((self.seq_len,), IGNORE_INDEX, dtype=torch.long)
        targets[-self.key_digits :] = ids[-self.key_digits :]
        return {"input_ids": ids[:-1], "targets": targets}


class PasskeyDataModule(ByteVocabulary, SeededDataModule):
    """Byte-level passkey retrieval (vocab_size = 256), generated on the fly.

    Args:
        seq_len: tokens per sample (at least :func:`min_seq_len` of ``key_digits``).
        batch_size: samples per batch.
        key_digits: digits in the pass key (leading zeros allowed).
        train_samples: training set size; sample i is a pure function of (seed, i).
        val_samples: validation set size, drawn from a seed stream disjoint from training.
        seed: seeds the samples and the training order.
        num_workers: DataLoader worker processes.

    Batches: ``{"input_ids": LongTensor (B, seq_len), "targets": LongTensor (B, seq_len)}``;
    ``targets`` is -100 except the last ``key_digits`` positions, which hold the key digits
    (as bytes) that ``input_ids`` must predict.
    """

    def __init__(
        self,
        seq_len: int = 2048,
        batch_size: int = 8,
        key_digits: int = 5,
        train_samples: int = 2000,
        val_samples: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.seq_len = _args.positive_int("seq_len", seq_len)
        self.key_digits = _args.positive_int("key_digits", key_digits)
        shortest = min_seq_len(self.key_digits)
        if self.seq_len < shortest:
            raise ValueError(
                f"seq_len must be at least {shortest} to hold the pass key sentences "
                f"for key_digits={self.key_digits}, got {self.seq_len}"
            )
        self.train_samples = _args.positive_int("train_samples", train_samples)
        self.val_samples = _args.positive_int("val_samples", val_samples)
        self.save_hyperparameters()

    def setup(self, stage: Optional[str] = None) -> None:
        self._train = PasskeyDataset(self.seq_len, self.key_digits, self.train_samples, self.seed, TRAIN_STREAM)
        self._val = PasskeyDataset(self.seq_len, self.key_digits, self.val_samples, self.seed, VAL_STREAM)
