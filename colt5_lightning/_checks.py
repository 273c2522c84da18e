"""Argument checks that turn bad input into errors a user can act on.

Each check names the argument and says what was expected, so a wrong shape never
surfaces as an opaque failure deep inside torch.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def non_negative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a non-negative int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value}")
    return value


def non_negative_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a non-negative number, got {type(value).__name__} {value!r}")
    if not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value}")
    return float(value)


def positive_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__} {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value}")
    return float(value)


def one_of(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def divisible(name: str, value: int, by_name: str, by: int) -> None:
    if value % by != 0:
        raise ValueError(f"{name} ({value}) must be divisible by {by_name} ({by})")


def token_count(name: str, value) -> Union[int, Tensor]:
    """A routed-token count: a positive int, or a per-sample tensor of shape (batch,)."""
    if isinstance(value, Tensor):
        if value.ndim != 1:
            raise ValueError(f"{name} as a tensor must have shape (batch,), got {tuple(value.shape)}")
        if value.dtype.is_floating_point or value.dtype == torch.bool:
            raise TypeError(f"{name} as a tensor must hold integers, got dtype {value.dtype}")
        if (value < 0).any():
            raise ValueError(f"{name} must be non-negative, got {value.tolist()}")
        return value
    return positive_int(name, value)


class NonFiniteError(ValueError):
    """A value that must be finite (a loss, a gradient, routing scores) holds NaN or an infinity."""


def budget(name: str, value) -> Union[float, Tensor]:
    """A soft top-k budget: a positive real number (Σ weights = k need not be a whole count), or
    a per-sample integer tensor of shape (batch,)."""
    if isinstance(value, Tensor):
        return token_count(name, value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number or a (batch,) tensor of counts, got {value!r}")
    return value


def features(name: str, x, dim: int, *, rank: int = 3, layout: str = "(batch, seq, dim)") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != rank:
        raise ValueError(f"{name} must have shape {layout}, got {x.ndim} dims {tuple(x.shape)}")
    if x.shape[-1] != dim:
        raise ValueError(f"{name} must have feature size {dim} in its last dim, got {x.shape[-1]}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def mask_for(name: str, mask: Optional[Tensor], shape, of: str) -> Optional[Tensor]:
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a bool tensor of shape {tuple(shape)}, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} to match {of}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got dtype {mask.dtype}")
    return mask
