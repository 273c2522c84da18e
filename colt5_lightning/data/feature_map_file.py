"""Reading and checking a file of feature maps and labels (``.npz`` or ``.pt``)."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

SUFFIXES = (".npz", ".pt")


class FeatureMaps(NamedTuple):
    x: torch.Tensor  # (N, C, H, W) float32
    y: torch.Tensor  # (N,) int64


def _load_arrays(path: Path) -> dict:
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except ValueError as error:  # object arrays need pickle, which we refuse
            raise ValueError(f"path {str(path)!r}: could not read the .npz arrays ({error})") from error
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        raise ValueError(
            f"path {str(path)!r}: could not load it with torch.load(weights_only=True); "
            f"save a dict of tensors {{'x': ..., 'y': ...}} ({error})"
        ) from error
    if not isinstance(data, dict):
        raise ValueError(f"path {str(path)!r} must hold a dict with keys 'x' and 'y', got {type(data).__name__}")
    return data


def _as_tensor(name: str, value) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, torch.Tensor):
        return value
    raise ValueError(f"{name} must be an array or tensor, got {type(value).__name__}")


def load_feature_maps(path: Path, channel_first: bool) -> FeatureMaps:
    """Load ``x`` (N, C, H, W) or (N, H, W, C) floats and ``y`` (N,) integer labels, checked."""
    if path.suffix not in SUFFIXES:
        raise ValueError(f"path must end in one of {SUFFIXES}, got {str(path)!r}")
    data = _load_arrays(path)
    missing = [key for key in ("x", "y") if key not in data]
    if missing:
        raise ValueError(f"path {str(path)!r} is missing key(s) {missing}; expected 'x' and 'y', found {sorted(data)}")
    x, y = _as_tensor("x", data["x"]), _as_tensor("y", data["y"])
    layout = "(N, C, H, W)" if channel_first else "(N, H, W, C)"
    if x.ndim != 4:
        raise ValueError(f"x must have shape {layout} (channel_first={channel_first}), got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must hold floating-point values, got dtype {x.dtype}")
    if y.ndim != 1:
        raise ValueError(f"y must have shape (N,), got {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    if len(y) != len(x):
        raise ValueError(f"x and y must have the same length N, got {len(x)} and {len(y)}")
    if len(y) and int(y.min()) < 0:
        raise ValueError(f"y must hold non-negative class labels, got minimum {int(y.min())}")
    if not channel_first:
        x = x.permute(0, 3, 1, 2)
    if not torch.isfinite(x).all():
        raise ValueError("x must hold finite values (found NaN or inf)")
    return FeatureMaps(x.to(torch.float32).contiguous(), y.to(torch.int64))
