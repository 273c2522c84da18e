"""Routing by hand: a diagnostic that tells a heavy-branch failure from a router failure.

Inside `forced_routing(model, mask)` every router of the model routes the positions where mask
(b, n) is True ahead of all others, at weight 1 (a causal router routes exactly those, up to
its slot count, also in its first segment and beyond its running capacity). If a task is learned with the right tokens
forced (a pass key's digits and its readout) but not without, the routers are what fails.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import _checks
from .causal import CausalRouter
from .router import Router


ROUTER_KINDS = ("q", "kv", "ff")  # query, key/value and feed-forward routers


def router_kind(name: str) -> str:
    """'q', 'kv' or 'ff' for a router's module path (attention routers are q_router / kv_router)."""
    last = name.rsplit(".", 1)[-1]
    return {"q_router": "q", "kv_router": "kv"}.get(last, "ff")


def routers_of(model: nn.Module, kinds: Optional[Sequence[str]] = None) -> list:
    """The routers of model, or only those of the given kinds."""
    if kinds is not None:
        for kind in kinds:
            _checks.one_of("router kind", kind, ROUTER_KINDS)
    return [m for name, m in model.named_modules() if isinstance(m, (Router, CausalRouter))
            and (kinds is None or router_kind(name) in kinds)]


@contextmanager
def forced_routing(model: nn.Module, mask: Tensor, kinds: Optional[Sequence[str]] = None) -> Iterator[None]:
    """Routes the True positions of mask (b, n) first in every router of model (or only in those of
    the given kinds: 'q', 'kv', 'ff'), then restores."""
    if mask.dtype != torch.bool or mask.ndim != 2:
        raise ValueError(f"the forced routing mask must be a (batch, seq) bool tensor, got "
                         f"{mask.dtype} {tuple(mask.shape)}")
    routers = routers_of(model, kinds)
    for router in routers:
        router.forced = mask
    try:
        yield
    finally:
        for router in routers:
            router.forced = None
