"""Byte-level language modelling on a text file, a folder of text, or the Python stdlib."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch.utils.data import DataLoader, Subset

from . import _args
from ._base import SeededDataModule
from .byte_codec import ByteVocabulary
from .byte_corpus import resolve_corpus
from .byte_windows import ByteWindowDataset, MappedBytes, RandomWindowSampler, evenly_spaced


class ByteTextDataModule(ByteVocabulary, SeededDataModule):
    """Next-byte prediction windows from a text corpus (vocab_size = 256).

    Args:
        path: a text file, or a folder whose ``*.py``, ``*.txt`` and ``*.md`` files
            (recursively, sorted by relative path) are concatenated into a cache file.
            None uses the ``.py`` sources of the running Python's standard library
            (no download needed). The cache lives in ``$COLT5_CACHE_DIR`` or
            ``~/.cache/colt5_lightning``.
        seq_len: tokens per sample; each sample is a window of ``seq_len + 1`` bytes.
        batch_size: samples per batch.
        val_fraction: the last ``val_fraction`` of the corpus bytes is the validation split.
        train_windows_per_epoch: random training windows drawn per epoch (seeded by ``seed + epoch``).
        val_windows: validation windows at fixed, evenly spaced offsets in the validation split.
        seed: seeds the training windows and their order.
        num_workers: DataLoader worker processes.
        max_bytes: only the first ``max_bytes`` bytes of the corpus are used; None = all.

    Batches: ``{"input_ids": LongTensor (B, seq_len), "targets": LongTensor (B, seq_len)}``
    with ``targets[:, t] == next byte after input_ids[:, t]`` (every position is scored).
    """

    def __init__(
        self,
        path: Optional[str] = None,
        seq_len: int = 1024,
        batch_size: int = 8,
        val_fraction: float = 0.05,
        train_windows_per_epoch: int = 1000,
        val_windows: int = 64,
        seed: int = 0,
        num_workers: int = 0,
        max_bytes: Optional[int] = 20_000_000,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if path is not None:
            if not isinstance(path, (str, Path)):
                raise ValueError(f"path must be a file or folder path (str) or None, got {path!r}")
            if not Path(path).expanduser().exists():
                raise FileNotFoundError(f"path must be an existing file or folder, got {str(path)!r}")
        self.path = None if path is None else str(path)
        self.seq_len = _args.positive_int("seq_len", seq_len)
        self.val_fraction = _args.open_fraction("val_fraction", val_fraction)
        self.train_windows_per_epoch = _args.positive_int("train_windows_per_epoch", train_windows_per_epoch)
        self.val_windows = _args.positive_int("val_windows", val_windows)
        self.max_bytes = _args.optional_positive_int("max_bytes", max_bytes)
        self.split_offset: Optional[int] = None
        self.save_hyperparameters()

    def prepare_data(self) -> None:
        resolve_corpus(self.path, self.max_bytes)  # builds the folder cache once, on one process

    def setup(self, stage: Optional[str] = None) -> None:
        if self._train is not None:
            return
        file, length = resolve_corpus(self.path, self.max_bytes)
        window = self.seq_len + 1
        source = "the Python stdlib sources" if self.path is None else repr(self.path)
        if length < window:
            raise ValueError(
                f"the corpus from {source} has {length} bytes; seq_len + 1 = {window} are needed "
                f"(lower seq_len or raise max_bytes)"
            )
        val_bytes = int(round(length * self.val_fraction))
        split = length - val_bytes
        for name, size in (("training", split), ("validation", val_bytes)):
            if size < window:
                raise ValueError(
                    f"the {name} split of {source} has {size} bytes (corpus {length} bytes, "
                    f"val_fraction={self.val_fraction}); seq_len + 1 = {window} are needed"
                )
        corpus = MappedBytes(file, length)
        self.split_offset = split
        self._train = ByteWindowDataset(corpus, self.seq_len, 0, split)
        val_all = ByteWindowDataset(corpus, self.seq_len, split, length)
        self._val = Subset(val_all, evenly_spaced(self.val_windows, len(val_all)))

    def train_dataloader(self) -> DataLoader:
        train = self._require(self._train, "training")
        sampler = RandomWindowSampler(self.train_windows_per_epoch, len(train), self.seed)
        return self._loader(train, shuffle=True, sampler=sampler)
