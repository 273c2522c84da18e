"""Fixed-length windows of a byte corpus, shaped as next-token prediction samples."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ._base import ResumableSampler
from .byte_corpus import open_bytes


class MappedBytes:
    """The first ``length`` bytes of ``file``, memory-mapped on first use.

    Pickling drops the map, so DataLoader workers re-open the file instead of being
    sent a copy of the corpus.
    """

    def __init__(self, file: Path, length: int) -> None:
        self.file = Path(file)
        self.length = length
        self._data: Optional[np.ndarray] = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_data"] = None
        return state

    def __len__(self) -> int:
        return self.length

    @property
    def array(self) -> np.ndarray:
        if self._data is None:
            self._data = open_bytes(self.file, self.length)
        return self._data


class ByteWindowDataset(Dataset):
    """Every window of ``seq_len + 1`` bytes lying inside ``corpus[start:end]``.

    Item ``i`` starts at byte ``start + i`` and is returned as
    ``{"input_ids": window[:-1], "targets": window[1:]}`` (LongTensors of shape (seq_len,)).
    """

    def __init__(self, corpus: MappedBytes, seq_len: int, start: int, end: int) -> None:
        if not 0 <= start <= end <= len(corpus):
            raise ValueError(f"window range [{start}, {end}) must lie inside the corpus of {len(corpus)} bytes")
        if end - start < seq_len + 1:
            raise ValueError(f"window range [{start}, {end}) is shorter than seq_len + 1 = {seq_len + 1} bytes")
        self.corpus = corpus
        self.seq_len = seq_len
        self.start = start
        self.end = end

    def __len__(self) -> int:
        return self.end - self.start - self.seq_len

    def offset(self, index: int) -> int:
        if not 0 <= index < len(self):
            raise IndexError(f"window index {index} out of range [0, {len(self)})")
        return self.start + index

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        offset = self.offset(int(index))
        window = self.corpus.array[offset : offset + self.seq_len + 1]
        chunk = torch.from_numpy(np.array(window, dtype=np.int64))
        return {"input_ids": chunk[:-1], "targets": chunk[1:]}


def evenly_spaced(count: int, size: int) -> list:
    """``count`` indices spread evenly over ``range(size)``, first and last included."""
    return np.linspace(0, size - 1, num=count).round().astype(np.int64).tolist()


class RandomWindowSampler(ResumableSampler):
    """Yields ``num_windows`` indices drawn uniformly from ``range(num_indices)``.

    An epoch's draw comes from a torch Generator seeded with ``seed + epoch``, so every
    epoch sees fresh windows and a rerun sees the same ones.
    """

    def __init__(self, num_windows: int, num_indices: int, seed: int) -> None:
        super().__init__(seed)
        self.num_windows = num_windows
        self.num_indices = num_indices

    def indices_for_epoch(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randint(0, self.num_indices, (self.num_windows,), generator=generator)

    @property
    def num_total(self) -> int:
        return self.num_windows
