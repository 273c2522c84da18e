"""Routing by hand: a diagnostic that tells a heavy-branch failure from a router failure.

Inside `forced_routing(model, mask)` every router of the model routes the positions where mask
(b, n) is True ahead of all others, at weight 1 (a causal router routes exactly those, up to
its slot count, also in its first segment and beyond its running capacity). If a task is learned with the right tokens
forced (a pass key's digits and its readout) but not without, the routers are what fails.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from .causal import CausalRouter
from .router import Router


def routers_of(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, (Router, CausalRouter))]


@contextmanager
def forced_routing(model: nn.Module, mask: Tensor) -> Iterator[None]:
    """Routes the True positions of mask (b, n) first in every router of model, then restores."""
    if mask.dtype != torch.bool or mask.ndim != 2:
        raise ValueError(f"the forced routing mask must be a (batch, seq) bool tensor, got "
                         f"{mask.dtype} {tuple(mask.shape)}")
    routers = routers_of(model)
    for router in routers:
        router.forced = mask
    try:
        yield
    finally:
        for router in routers:
            router.forced = None
