"""Classification of the user's own feature maps stored in a ``.npz`` or ``.pt`` file."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch
from torch.utils.data import Dataset

from . import _args
from ._base import SeededDataModule
from .feature_map_file import SUFFIXES, FeatureMaps, load_feature_maps


class FeatureMapDataset(Dataset):
    def __init__(self, maps: FeatureMaps, indices: torch.Tensor) -> None:
        self.maps = maps
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        i = int(self.indices[index])
        return {"inputs": self.maps.x[i], "label": self.maps.y[i]}


class FeatureMapDataModule(SeededDataModule):
    """Feature maps ``x`` with integer labels ``y`` from a file, split by a seeded permutation.

    Args:
        path: a ``.npz`` file with arrays ``x`` and ``y``, or a ``.pt`` file holding a
            dict of tensors ``{"x": ..., "y": ...}`` (loaded with ``weights_only=True``).
            ``x`` is floating point, (N, C, H, W) or (N, H, W, C); ``y`` is (N,) ints >= 0.
        batch_size: samples per batch.
        val_fraction: share of the samples (at least one) held out for validation.
        channel_first: True if ``x`` is (N, C, H, W), False if (N, H, W, C).
        seed: seeds the split permutation and the training order.
        num_workers: DataLoader worker processes.
        num_classes: number of classes; None = max label + 1.

    The file is read when ``setup`` runs or a shape property is first asked for.
    Properties: ``height``, ``width``, ``image_size`` (only for square maps),
    ``in_channels``, ``num_classes``.

    Batches: ``{"inputs": FloatTensor (B, C, H, W) float32, "label": LongTensor (B,)}``.
    """

    def __init__(
        self,
        path: str,
        batch_size: int = 16,
        val_fraction: float = 0.1,
        channel_first: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        num_classes: Optional[int] = None,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if not isinstance(path, (str, Path)):
            raise ValueError(f"path must be a path to a {' or '.join(SUFFIXES)} file, got {path!r}")
        file = Path(path).expanduser()
        if file.suffix not in SUFFIXES:
            raise ValueError(f"path must end in one of {SUFFIXES}, got {str(path)!r}")
        if not file.is_file():
            raise FileNotFoundError(f"path must be an existing {file.suffix} file, got {str(path)!r}")
        self.path = str(path)
        self.val_fraction = _args.open_fraction("val_fraction", val_fraction)
        if not isinstance(channel_first, bool):
            raise ValueError(f"channel_first must be a bool, got {channel_first!r}")
        self.channel_first = channel_first
        self._num_classes = _args.optional_positive_int("num_classes", num_classes)
        self._maps: Optional[FeatureMaps] = None
        self.save_hyperparameters()

    @property
    def maps(self) -> FeatureMaps:
        if self._maps is None:
            maps = load_feature_maps(Path(self.path).expanduser(), self.channel_first)
            if len(maps.y) < 2:
                raise ValueError(f"path {self.path!r} must hold at least 2 samples to split, got {len(maps.y)}")
            if self._num_classes is not None and int(maps.y.max()) >= self._num_classes:
                raise ValueError(
                    f"num_classes ({self._num_classes}) must exceed the largest label in y ({int(maps.y.max())})"
                )
            self._maps = maps
        return self._maps

    @property
    def in_channels(self) -> int:
        return self.maps.x.shape[1]

    @property
    def height(self) -> int:
        return self.maps.x.shape[2]

    @property
    def width(self) -> int:
        return self.maps.x.shape[3]

    @property
    def image_size(self) -> int:
        if self.height != self.width:
            raise ValueError(
                f"image_size is only defined for square maps; these are {self.height}x{self.width} "
                f"(use height and width)"
            )
        return self.height

    @property
    def num_classes(self) -> int:
        return self._num_classes if self._num_classes is not None else int(self.maps.y.max()) + 1

    def setup(self, stage: Optional[str] = None) -> None:
        if self._train is not None:
            return
        count = len(self.maps.y)
        num_val = min(max(1, round(count * self.val_fraction)), count - 1)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed))
        self._val = FeatureMapDataset(self.maps, order[:num_val].sort().values)
        self._train = FeatureMapDataset(self.maps, order[num_val:])
