"""Byte-level text encoding: every UTF-8 byte is one token, so the vocabulary is 256."""
from __future__ import annotations

from typing import Iterable, Union

import torch

BYTE_VOCAB_SIZE = 256


def encode(text: str) -> torch.Tensor:
    """UTF-8 bytes of ``text`` as a LongTensor of shape (len,)."""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def decode(ids: Union[torch.Tensor, Iterable[int]]) -> str:
    """Inverse of :func:`encode`; invalid UTF-8 becomes U+FFFD. Values -100 (ignored targets) are skipped."""
    if isinstance(ids, torch.Tensor):
        ids = ids.reshape(-1).tolist()
    data = bytearray()
    for i in ids:
        i = int(i)
        if i == -100:
            continue
        if not 0 <= i < BYTE_VOCAB_SIZE:
            raise ValueError(f"ids must be byte values in [0, 255], got {i}")
        data.append(i)
    return data.decode("utf-8", errors="replace")


class ByteVocabulary:
    """What a byte-level DataModule tells the model and the sampler: 256 tokens, UTF-8 codec."""

    @property
    def vocab_size(self) -> int:
        return BYTE_VOCAB_SIZE

    @staticmethod
    def encode(text: str) -> torch.Tensor:
        return encode(text)

    @staticmethod
    def decode(ids: Union[torch.Tensor, Iterable[int]]) -> str:
        return decode(ids)
