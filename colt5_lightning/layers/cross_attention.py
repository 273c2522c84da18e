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
    (multiply_keys_by_score=False; kv_scaling='inputs' scales keys and values)."""

    def __init__(self, dim: int, *, num_tokens_q: int, num_tokens_kv: int, dim_head: int = 64,
                 heads: int = 8, dim_context: Optional[int] = None, kv_routing_tokens: int = 1,
                 router_straight_through: bool = True, router_type: str = "coor_descent",
                 router_kwargs: Optional[dict] = None, kv_scaling: Optional[str] = None,
                 multiply_keys_by_score: bool = False, use_null_q_tokens: bool = True,
                 use_triton: bool = False, use_flash_attn: bool = False):
        # use_triton / use_flash_attn: colt5-attention's kernel switches; the fast paths are always taken here
        super().__init__()
        kv_scaling = resolve_kv_scaling(kv_scaling, multiply_keys_by_score)
        self.dim = _checks.positive_int("dim", dim)
        self.dim_context = dim if dim_context is None else _checks.positive_int("dim_context", dim_context)
        self.num_tokens_q = _checks.positive_int("num_tokens_q", num_tokens_q)
        self.num_tokens_kv = _checks.positive_int("num_tokens_kv", num_tokens_kv)
        _checks.positive_int("kv_routing_tokens", kv_routing_tokens)
        _checks.positive_int("heads", heads)
        _checks.positive_int("dim_head", dim_head)
        _checks.divisible("heads", heads, "kv_routing_tokens", kv_routing_tokens)
        self.norm = nn.LayerNorm(dim)
        self.context_norm = nn.LayerNorm(self.dim_context)
        common = dict(router_type=router_type, straight_through=router_straight_through,
                      router_kwargs=router_kwargs)
        self.q_router = make_router(dim, **common)
        self.kv_router = make_router(self.dim_context, num_routing_tokens=kv_routing_tokens, **common)
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
        kv_routing = self.kv_router(context, num_tokens=k_kv, mask=context_mask)
        out = self.attend(q_routing.tokens[:, 0], kv_routing.tokens, kv_routing.weights, kv_routing.routed_mask)
        base = torch.zeros(x.shape[:2] + (self.dim,), device=x.device, dtype=out.dtype)
        if self.null_q_token is not None:
            routed = Router.routed_positions(q_routing, x.shape[1])[:, 0]
            base = base + (~routed).unsqueeze(-1).to(out.dtype) * self.null_q_token.to(out.dtype)
        return Router.scatter(q_routing, out.unsqueeze(1), base)
