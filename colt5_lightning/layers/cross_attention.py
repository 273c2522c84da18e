"""ConditionalRoutedCrossAttention: routed queries attend to routed memory tokens."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from .. import _checks
from ..routing import Router
from .heavy_attention import HeavyAttention, resolve_kv_scaling
from .routed_common import count, make_router


class ConditionalRoutedCrossAttention(nn.Module):
    """x (b, n, dim) attends to context (b, m, dim_context): the top num_tokens_q queries of x and
    kv_routing_tokens sets of the top num_tokens_kv context tokens, each set served by
    heads / kv_routing_tokens heads. Returns (b, n, dim): where no query was routed, a learned
    null output (use_null_q_tokens=True, colt5-attention's default) or zero. As there,
    router_straight_through defaults to True and the kv router's weights scale the values only
    (multiply_keys_by_score=False; kv_scaling='inputs' scales keys and values).

    query_conditioned_kv_routing: the memory router's routing tokens are not fixed vectors but
    are read from the source first: each of kv_routing_tokens learned queries attends over x
    (masked), and the summary, projected to dim_context, scores the memories. Which memories are
    retrieved then depends on what the source asks for (colt5-attention's open todo).
    route_block_size: the memories are routed evenly, ⌈num_tokens_kv / blocks⌉ from each block
    of that many (see Router). num_sets_kv: colt5-attention's name for kv_routing_tokens, which it
    accepts and ignores; here a value above 1 sets the number of key/value routes."""

    def __init__(self, dim: int, *, num_tokens_q: int, num_tokens_kv: int, dim_head: int = 64,
                 heads: int = 8, dim_context: Optional[int] = None, kv_routing_tokens: int = 1,
                 router_straight_through: bool = True, router_type: str = "coor_descent",
                 router_kwargs: Optional[dict] = None, kv_scaling: Optional[str] = None,
                 multiply_keys_by_score: bool = False, use_null_q_tokens: bool = True,
                 use_triton: bool = False, use_flash_attn: bool = False, num_sets_kv: int = 1,
                 route_block_size: Optional[int] = None, query_conditioned_kv_routing: bool = False):
        # use_triton / use_flash_attn: colt5-attention's kernel switches; the fast paths are always taken here
        super().__init__()
        kv_routing_tokens = kv_routes(kv_routing_tokens, num_sets_kv)
        kv_scaling = resolve_kv_scaling(kv_scaling, multiply_keys_by_score)
        self.dim = _checks.positive_int("dim", dim)
        self.dim_context = dim if dim_context is None else _checks.positive_int("dim_context", dim_context)
        self.num_tokens_q = _checks.positive_int("num_tokens_q", num_tokens_q)
        self.num_tokens_kv = _checks.positive_int("num_tokens_kv", num_tokens_kv)
        _checks.positive_int("heads", heads)
        _checks.positive_int("dim_head", dim_head)
        _checks.divisible("heads", heads, "kv_routing_tokens", kv_routing_tokens)
        self.norm = nn.LayerNorm(dim)
        self.context_norm = nn.LayerNorm(self.dim_context)
        common = dict(router_type=router_type, straight_through=router_straight_through,
                      router_kwargs=router_kwargs)
        self.q_router = make_router(dim, **common)
        kv_router_kwargs = dict(router_kwargs or {})
        if route_block_size is not None:
            kv_router_kwargs["route_block_size"] = route_block_size
        if query_conditioned_kv_routing:
            kv_router_kwargs["learned_routing_tokens"] = True
            self.kv_routing_queries = nn.Parameter(torch.randn(kv_routing_tokens, dim) * dim ** -0.5)
            self.to_kv_routing_tokens = nn.Linear(dim, self.dim_context, bias=False)
        self.query_conditioned_kv_routing = bool(query_conditioned_kv_routing)
        self.kv_router = make_router(self.dim_context, num_routing_tokens=kv_routing_tokens,
                                     **{**common, "router_kwargs": kv_router_kwargs})
        self.attend = HeavyAttention(dim, heads=heads, dim_head=dim_head, num_kv_routes=kv_routing_tokens,
                                     dim_context=self.dim_context, kv_scaling=kv_scaling)
        self.null_q_token = nn.Parameter(torch.randn(dim)) if use_null_q_tokens else None

    def forward(self, x: Tensor, context: Tensor, mask: Optional[Tensor] = None,
                context_mask: Optional[Tensor] = None, num_tokens_q: Union[int, Tensor, None] = None,
                num_tokens_kv: Union[int, Tensor, None] = None) -> Tensor:
        _checks.features("x", x, self.dim)
        _checks.features("context", context, self.dim_context, layout="(batch, context_len, dim_context)")
        if context.shape[0] != x.shape[0]:
            raise ValueError(f"context batch size {context.shape[0]} must equal x's {x.shape[0]}")
        mask = _checks.mask_for("mask", mask, x.shape[:2], "x (batch, seq)")
        context_mask = _checks.mask_for("context_mask", context_mask, context.shape[:2],
                                        "context (batch, context_len)")
        k_q = count("num_tokens_q", num_tokens_q, self.num_tokens_q)
        k_kv = count("num_tokens_kv", num_tokens_kv, self.num_tokens_kv)
        x = self.norm(x)
        context = self.context_norm(context)
        q_routing = self.q_router(x, num_tokens=k_q, mask=mask)
        routing_tokens = self._kv_routing_tokens(x, mask) if self.query_conditioned_kv_routing else None
        kv_routing = self.kv_router(context, num_tokens=k_kv, mask=context_mask, routing_tokens=routing_tokens)
        out = self.attend(q_routing.tokens[:, 0], kv_routing.tokens, kv_routing.weights, kv_routing.routed_mask)
        base = torch.zeros(x.shape[:2] + (self.dim,), device=x.device, dtype=out.dtype)
        if self.null_q_token is not None:
            routed = Router.routed_positions(q_routing, x.shape[1])[:, 0]
            base = base + (~routed).unsqueeze(-1).to(out.dtype) * self.null_q_token.to(out.dtype)
        return Router.scatter(q_routing, out.unsqueeze(1), base)

    def _kv_routing_tokens(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        """(b, kv_routing_tokens, dim_context): each learned query's attention-weighted summary of x."""
        logits = (torch.einsum("rd,bnd->brn", self.kv_routing_queries.to(x.dtype), x) * self.dim ** -0.5).float()
        if mask is not None:  # finite, so that a source with no valid token gives a summary, not NaN
            logits = logits.masked_fill(~mask.unsqueeze(1), -1e30)
        summary = torch.einsum("brn,bnd->brd", logits.softmax(-1).to(x.dtype), x)
        return self.to_kv_routing_tokens(summary)


def kv_routes(kv_routing_tokens: int, num_sets_kv: int) -> int:
    """The number of key/value routes from kv_routing_tokens and colt5-attention's num_sets_kv."""
    _checks.positive_int("num_sets_kv", num_sets_kv)
    if num_sets_kv > 1 and kv_routing_tokens not in (1, num_sets_kv):
        raise ValueError(f"num_sets_kv={num_sets_kv} and kv_routing_tokens={kv_routing_tokens} both set the number "
                         "of key/value routes: give one")
    return max(_checks.positive_int("kv_routing_tokens", kv_routing_tokens), num_sets_kv)
