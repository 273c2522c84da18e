"""Pieces shared by the routed layers: router construction and per-call token counts."""
from __future__ import annotations

from typing import Optional

from torch import nn

from .. import _checks
from ..routing import ROUTER_TYPES, Router
from ..routing.causal import CausalRouter


def make_router(dim: int, *, router_type: str, straight_through: bool, router_kwargs: Optional[dict],
                num_routing_tokens: int = 1, causal_segment: Optional[int] = None,
                max_seq_len: Optional[int] = None, key_values: bool = False) -> nn.Module:
    """A Router, or a CausalRouter when causal_segment is given. key_values: the router picks
    key/values, which may be routed in the first segment (the caller shows them only to later ones)."""
    _checks.one_of("router_type", router_type, ROUTER_TYPES)
    if router_kwargs is not None and not isinstance(router_kwargs, dict):
        raise TypeError(f"router_kwargs must be a dict, got {type(router_kwargs).__name__}")
    kwargs = dict(router_kwargs or {})
    if causal_segment is not None:
        return CausalRouter(dim, segment_size=causal_segment, reference_len=max_seq_len,
                            num_routing_tokens=num_routing_tokens, straight_through=straight_through,
                            router_type=router_type, route_first_segment=key_values, **kwargs)
    return Router(dim, num_routing_tokens=num_routing_tokens, router_type=router_type,
                  straight_through=straight_through, **kwargs)


def count(name: str, override, default):
    """The routed-token count for this call: the override if given, else the module's."""
    return _checks.token_count(name, default if override is None else override)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: float):
        hidden = max(1, int(dim * mult))
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
