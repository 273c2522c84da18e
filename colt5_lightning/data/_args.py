"""Argument checks for the data modules.

Every check raises ``ValueError`` naming the argument and what was expected, so a
typo in a YAML config fails at construction time with a message a user can act on.
"""
from __future__ import annotations

import math
from typing import Collection, Optional


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(name: str, value) -> int:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def non_negative_int(name: str, value) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def optional_positive_int(name: str, value) -> Optional[int]:
    if value is None:
        return None
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    return value


def int_seed(name: str, value) -> int:
    if not _is_int(value):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return value


def int_at_least(name: str, value, minimum: int, why: str) -> int:
    """An int of at least `minimum`; `why` says what a smaller one would break."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an int of at least {minimum} ({why}), got {value!r}")
    return value


def finite_non_negative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return float(value)


def open_fraction(name: str, value) -> float:
    """A float strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a fraction strictly between 0 and 1, got {value!r}")
    return float(value)


def one_of(name: str, value, choices: Collection) -> object:
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def at_most(name: str, value: int, bound_name: str, bound: int) -> None:
    if value > bound:
        raise ValueError(f"{name} ({value}) must be at most {bound_name} ({bound})")
