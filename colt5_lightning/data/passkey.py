"""Passkey retrieval: find a number hidden at a random depth in long filler text.

Each sample is ``seq_len + 1`` bytes: filler sentences with the needle
``"The pass key is K. Remember it. K is the pass key. "`` inserted at a random
sentence boundary, ending exactly with ``"What is the pass key? The pass key is K"``.
Only the positions that predict the digits of that final K are scored.

The readout variant (:class:`PasskeyReadoutDataModule`, for encoders) ends instead with
``"... The pass key is _____"``: the key's digits replaced by placeholders, each to be
classified as the digit it hides.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional

import torch
from torch.utils.data import Dataset

from . import _args, byte_codec
from ._base import SeededDataModule
from .byte_codec import ByteVocabulary
from ._seeding import TRAIN_STREAM, VAL_STREAM, sample_rng

PLACEHOLDER = "_"
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
    """``num_samples`` passkey samples of one seed stream, generated on demand. ``length`` is
    read at every item, so a curriculum may change it between batches."""

    def __init__(self, length: int, key_digits: int, num_samples: int, seed: int, stream: int) -> None:
        self.length = length
        self.key_digits = key_digits
        self.num_samples = num_samples
        self.seed = seed
        self.stream = stream

    def __len__(self) -> int:
        return self.num_samples

    def sample(self, index: int) -> PasskeySample:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample index {index} out of range [0, {self.num_samples})")
        return make_sample(self.length, self.key_digits, self.seed, self.stream, index)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        ids = byte_codec.encode(self.sample(int(index)).text)
        targets = torch.full((self.length,), IGNORE_INDEX, dtype=torch.long)
        targets[-self.key_digits :] = ids[-self.key_digits :]
        return {"input_ids": ids[:-1], "targets": targets, "route_mask": answer_tokens(ids[:-1], self.key_digits)}


def answer_tokens(ids: torch.Tensor, key_digits: int) -> torch.Tensor:
    """(n,) bool: the tokens retrieval needs, for routing by hand (routing.oracle): every digit
    (only the needle has digits) and the last key_digits positions (where the key is read out)."""
    mask = (ids >= ord("0")) & (ids <= ord("9"))
    mask[-key_digits:] = True
    return mask


class PasskeyReadoutDataset(PasskeyDataset):
    """Passkey samples whose final key is hidden behind placeholders: ``{"inputs": (length,)
    bytes, "label": (key_digits,) digits, "route_mask"}``."""

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample index {index} out of range [0, {self.num_samples})")
        sample = make_sample(self.length - 1, self.key_digits, self.seed, self.stream, int(index))  # length bytes
        text = sample.text[: -self.key_digits] + PLACEHOLDER * self.key_digits
        label = torch.tensor([int(d) for d in sample.key], dtype=torch.long)
        inputs = byte_codec.encode(text)
        return {"inputs": inputs, "label": label, "route_mask": answer_tokens(inputs, self.key_digits)}


class PasskeyDataModule(ByteVocabulary, SeededDataModule):
    """Byte-level passkey retrieval (vocab_size = 256), generated on the fly.

    Args:
        seq_len: tokens per sample (at least :func:`min_seq_len` of ``key_digits``); validation
            always uses it.
        batch_size: samples per batch.
        key_digits: digits in the pass key (leading zeros allowed).
        train_samples: training set size; sample i is a pure function of (seed, i).
        val_samples: validation set size, drawn from a seed stream disjoint from training.
        seed: seeds the samples and the training order.
        num_workers: DataLoader worker processes.
        start_len: training starts at this length (default seq_len); a LengthCurriculum callback
            raises it towards seq_len. With start_len < seq_len, num_workers must be 0, so that
            the loader sees each change.

    Batches: ``{"input_ids": LongTensor (B, seq_len), "targets": LongTensor (B, seq_len),
    "route_mask": BoolTensor (B, seq_len)}``; ``targets`` is -100 except the last ``key_digits``
    positions, which hold the key digits (as bytes) that ``input_ids`` must predict;
    ``route_mask`` marks the tokens an oracle router would pick (see :func:`answer_tokens`).
    """

    dataset_class = PasskeyDataset

    def __init__(
        self,
        seq_len: int = 2048,
        batch_size: int = 8,
        key_digits: int = 5,
        train_samples: int = 2000,
        val_samples: int = 64,
        seed: int = 0,
        num_workers: int = 0,
        start_len: Optional[int] = None,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.seq_len = _args.positive_int("seq_len", seq_len)
        self.key_digits = _args.positive_int("key_digits", key_digits)
        self.start_len = self.seq_len if start_len is None else _args.positive_int("start_len", start_len)
        shortest = self.shortest()
        for name, value in (("seq_len", self.seq_len), ("start_len", self.start_len)):
            if value < shortest:
                raise ValueError(f"{name} must be at least {shortest} to hold the pass key sentences "
                                 f"for key_digits={self.key_digits}, got {value}")
        if self.start_len > self.seq_len:
            raise ValueError(f"start_len ({self.start_len}) must not exceed seq_len ({self.seq_len})")
        if self.start_len < self.seq_len and self.num_workers:
            raise ValueError("a length curriculum (start_len < seq_len) needs num_workers=0: worker processes "
                             "would keep their own copy of the training length")
        self.train_samples = _args.positive_int("train_samples", train_samples)
        self.val_samples = _args.positive_int("val_samples", val_samples)
        self.save_hyperparameters()

    def shortest(self) -> int:
        """The shortest sample that holds the needle and the question."""
        return min_seq_len(self.key_digits)

    @property
    def train_len(self) -> int:
        """The length training samples are drawn at now."""
        return self._train.length if self._train is not None else self.start_len

    @train_len.setter
    def train_len(self, length: int) -> None:
        if not self.shortest() <= length <= self.seq_len:
            raise ValueError(f"train_len must lie in [{self.shortest()}, {self.seq_len}], got {length}")
        self._require(self._train, "training").length = int(length)

    def setup(self, stage: Optional[str] = None) -> None:
        if self._train is None:  # kept across stages, so that a curriculum's length survives
            self._train = self.dataset_class(self.start_len, self.key_digits, self.train_samples, self.seed,
                                             TRAIN_STREAM)
        self._val = self.dataset_class(self.seq_len, self.key_digits, self.val_samples, self.seed, VAL_STREAM)


class PasskeyReadoutDataModule(PasskeyDataModule):
    """Byte-level passkey retrieval read out by classification (vocab_size = 256, num_classes =
    10 per digit, num_readout = key_digits): the input ends with one placeholder per key digit.
    Takes PasskeyDataModule's arguments. Batches: ``{"inputs": (B, seq_len) bytes,
    "label": (B, key_digits) digits, "route_mask": (B, seq_len) bool}``.
    """

    dataset_class = PasskeyReadoutDataset
    num_classes = 10

    def __init__(self, seq_len: int = 4096, batch_size: int = 8, key_digits: int = 5,
                 train_samples: int = 1_000_000, val_samples: int = 512, seed: int = 0,
                 num_workers: int = 0, start_len: Optional[int] = None) -> None:
        super().__init__(seq_len=seq_len, batch_size=batch_size, key_digits=key_digits,
                         train_samples=train_samples, val_samples=val_samples, seed=seed,
                         num_workers=num_workers, start_len=start_len)
        self.num_readout = self.key_digits

    def shortest(self) -> int:
        return min_seq_len(self.key_digits) + 1
