"""ConditionalRoutedAttention: local attention for every token plus full attention among the
top-k routed queries and top-k routed key/values."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from ..routing import Router
from ..routing.router import Routing
from .heavy_attention import HeavyAttention, resolve_kv_scaling
from .local_attention import LocalAttention
from .routed_common import count, make_router

HEAVY_QUERIES = ("routed", "all")
KV_ROUTED_BY = ("hidden", "embedding")


class RoutedAttentionBase(nn.Module):
    """Norm, the two routers and the heavy branch; subclasses supply the light branch and routing.

    colt5-attention's keywords keep its defaults: router_straight_through=True,
    use_null_q_tokens=True (a learned output for the queries not routed), values-only key/value
    scaling (multiply_keys_by_score=False; kv_scaling='inputs' is the paper's keys-and-values),
    multiply_queries_by_score=False, has_light_attn=True (False: the heavy-only ablation),
    rotary_emb=False (True: the heavy attention's queries and keys rotated by their positions).

    heavy_queries: 'routed' (CoLT5: the query router picks num_heavy_tokens_q queries) or 'all'
    (no query router: every position reads the routed key/values, so only the key/value router
    has to find what matters; costs a heavy query and output projection per token and n × k_kv
    attention scores: the main job's LM step at 4k ran at half the routed tokens/s on CPU).
    kv_routed_by: 'hidden' (the layer's input, as CoLT5) or 'embedding': the key/value router
    scores the model's embeddings (`route_input`, passed by the encoder stack to every block)
    while the tokens routed are still the layer's own, so a deep layer can keep the tokens that
    are easy to recognise by what they are (a pass key's digits)."""

    def __init__(self, dim: int, *, num_heavy_tokens_q: int, num_heavy_tokens_kv: int,
                 num_routed_kv: int = 1, light_dim_head: int = 64, light_heads: int = 8,
                 light_window_size: int = 128, heavy_dim_head: int = 64, heavy_heads: int = 8,
                 router_straight_through: bool = True, router_type: str = "coor_descent",
                 router_kwargs: Optional[dict] = None, kv_scaling: Optional[str] = None,
                 multiply_keys_by_score: bool = False, multiply_queries_by_score: bool = False,
                 use_null_q_tokens: bool = True, has_light_attn: bool = True, rotary_emb: bool = False,
                 light_checkpoint: bool = False, causal_segment: Optional[int] = None,
                 max_seq_len: Optional[int] = None, heavy: bool = True, light_position: str = "none",
                 heavy_queries: str = "routed", kv_routed_by: str = "hidden", use_triton: bool = False, use_flash_attn: bool = False):
        # use_triton / use_flash_attn: colt5-attention's switches for its fused kernels; here the
        # fast paths (SDPA, the compiled solver on CUDA) are always taken, so they change nothing
        super().__init__()
        self.has_light_attn = bool(has_light_attn)
        self.multiply_queries_by_score = bool(multiply_queries_by_score)
        kv_scaling = resolve_kv_scaling(kv_scaling, multiply_keys_by_score)
        self.dim = _checks.positive_int("dim", dim)
        self.num_heavy_tokens_q = _checks.positive_int("num_heavy_tokens_q", num_heavy_tokens_q)
        self.num_heavy_tokens_kv = _checks.positive_int("num_heavy_tokens_kv", num_heavy_tokens_kv)
        _checks.positive_int("num_routed_kv", num_routed_kv)
        _checks.divisible("heavy_heads", heavy_heads, "num_routed_kv", num_routed_kv)
        self.light_window_size = _checks.positive_int("light_window_size", light_window_size)
        self.light_heads, self.light_dim_head = light_heads, light_dim_head
        self.light_checkpoint = bool(light_checkpoint)
        self.light_position = light_position
        self.norm = nn.LayerNorm(dim)
        self.max_seq_len = max_seq_len
        self.has_heavy = bool(heavy)
        self.heavy_queries = _checks.one_of("heavy_queries", heavy_queries, HEAVY_QUERIES)
        self.kv_routed_by = _checks.one_of("kv_routed_by", kv_routed_by, KV_ROUTED_BY)
        if not (self.has_heavy or self.has_light_attn):
            raise ValueError("heavy=False and has_light_attn=False leave the attention with no branch")
        self.null_q_token = None
        if not self.has_heavy:  # the light-only ablation: no heavy branch, no routers
            return
        if use_null_q_tokens and heavy_queries == "routed":  # what an unrouted query gets from the heavy branch
            self.null_q_token = nn.Parameter(torch.randn(dim))
        self.heavy = HeavyAttention(dim, heads=heavy_heads, dim_head=heavy_dim_head,
                                    num_kv_routes=num_routed_kv, kv_scaling=kv_scaling, rotary=rotary_emb)
        common = dict(router_type=router_type, straight_through=router_straight_through,
                      router_kwargs=router_kwargs)
        self.q_router = (make_router(dim, causal_segment=causal_segment, max_seq_len=max_seq_len, **common)
                         if heavy_queries == "routed" else None)
        self.kv_router = make_router(dim, num_routing_tokens=num_routed_kv, causal_segment=causal_segment,
                                     max_seq_len=max_seq_len, key_values=True, **common)

    def _counts(self, q, kv):
        return (count("num_heavy_tokens_q", q, self.num_heavy_tokens_q),
                count("num_heavy_tokens_kv", kv, self.num_heavy_tokens_kv))

    def _light(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        """The light branch's output, zeros without one (has_light_attn=False)."""
        return self.light(x, mask) if self.has_light_attn else torch.zeros_like(x)

    def _heavy(self, x: Tensor, mask: Optional[Tensor], k_q, k_kv, light_out: Tensor,
               route_input: Optional[Tensor] = None) -> Tensor:
        """Routes queries and key/values of normalised x (b, n, dim), adds the heavy output to light_out."""
        if not self.has_heavy:
            return light_out
        q_routing = self._route_queries(x, k_q, mask)
        kv_routing = self._route_key_values(x, k_kv, mask, route_input)
        queries, q_position = self._queries(x, q_routing)
        heavy = self.heavy(queries, kv_routing.tokens, kv_routing.weights, kv_routing.routed_mask,
                           query_weights=self._query_weights(q_routing), positions=(q_position, kv_routing.indices))
        return self._merge(q_routing, heavy, light_out)

    def _route_queries(self, x: Tensor, k_q, mask: Optional[Tensor], **kwargs) -> Optional[Routing]:
        """The query routing, or None when every position is a heavy query (heavy_queries='all')."""
        if self.q_router is None:
            return None
        return self.q_router(x, num_tokens=k_q, mask=mask, **kwargs)

    def _route_key_values(self, x: Tensor, k_kv, mask: Optional[Tensor], route_input: Optional[Tensor],
                          **kwargs) -> Routing:
        """The key/value routing of x, scored on x or (kv_routed_by='embedding') on route_input."""
        score_input = None
        if self.kv_routed_by == "embedding":
            if route_input is None:
                raise ValueError("kv_routed_by='embedding' scores the model's embeddings: pass them as "
                                 "route_input (b, n, dim) (CoLT5Encoder and the models do)")
            score_input = F.layer_norm(route_input, route_input.shape[-1:])
        return self.kv_router(x, num_tokens=k_kv, mask=mask, score_input=score_input, **kwargs)

    @staticmethod
    def _queries(x: Tensor, q_routing: Optional[Routing]) -> tuple:
        """(queries (b, m_q, dim), their positions (b, m_q)): the routed ones, or every position."""
        if q_routing is None:
            b, n, _ = x.shape
            return x, torch.arange(n, device=x.device).expand(b, n)
        return q_routing.tokens[:, 0], q_routing.indices[:, 0]

    def _query_weights(self, q_routing: Optional[Routing]) -> Optional[Tensor]:
        if q_routing is None or not self.multiply_queries_by_score:
            return None
        return q_routing.weights[:, 0]

    def _merge(self, q_routing: Optional[Routing], heavy: Tensor, light_out: Tensor) -> Tensor:
        """light_out plus the weighted heavy output at the routed queries (at every position when
        all are queries) and, with null q tokens, the learned null output at every other position."""
        if q_routing is None:
            return light_out + heavy
        out = Router.scatter(q_routing, heavy.unsqueeze(1), light_out)
        if self.null_q_token is None:
            return out
        routed = Router.routed_positions(q_routing, light_out.shape[1])[:, 0]
        return out + (~routed).unsqueeze(-1).to(out.dtype) * self.null_q_token.to(out.dtype)


class ConditionalRoutedAttention(RoutedAttentionBase):
    """x (b, n, dim) -> (b, n, dim). The light branch attends within blocks of `light_window_size`
    and their neighbours; the heavy branch attends among routed tokens, its output scaled by the
    query router's weight and, with kv_scaling='inputs' (the paper), its key/value inputs by the
    kv router's weight ('values' scales projected values only, as colt5-attention does).
    light_checkpoint=True recomputes the light attention in backward instead of keeping its
    look-around key/value copies: less memory at long lengths for a little more time.
    heavy=False drops the heavy branch and its routers (the light-only ablation); light_position
    ('none', 'rotary', 'relative') says how the light attention sees distances."""

    def __init__(self, dim: int, **kwargs):
        super().__init__(dim, **kwargs)
        if self.has_light_attn:
            self.light = LocalAttention(dim, heads=self.light_heads, dim_head=self.light_dim_head,
                                        window_size=self.light_window_size, checkpoint=self.light_checkpoint,
                                        position=self.light_position)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None,
                num_heavy_tokens_q: Union[int, Tensor, None] = None,
                num_heavy_tokens_kv: Union[int, Tensor, None] = None, route_input: Optional[Tensor] = None) -> Tensor:
        """route_input: the model's embeddings (b, n, dim), needed with kv_routed_by='embedding'."""
        _checks.features("x", x, self.dim)
        mask = _checks.mask_for("mask", mask, x.shape[:2], "x (batch, seq)")
        k_q, k_kv = self._counts(num_heavy_tokens_q, num_heavy_tokens_kv)
        x = self.norm(x)
        return self._heavy(x, mask, k_q, k_kv, self._light(x, mask), route_input)
