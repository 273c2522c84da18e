"""Heavy-branch attention: full attention among routed queries and routed key/values.

Key/values may come in r routed sets (multi-head routing); heads are split evenly between
them. A learned null key/value per head keeps rows with no valid key well defined.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from .rotary import RotaryEmbedding

KV_SCALINGS = ("inputs", "values")


def resolve_kv_scaling(kv_scaling: Optional[str], multiply_keys_by_score: bool) -> str:
    """kv_scaling from colt5-attention's multiply_keys_by_score when not given: scaling keys and
    values by the router weight ('inputs': equal, the projections having no bias) or values only."""
    if kv_scaling is None:
        return "inputs" if multiply_keys_by_score else "values"
    if multiply_keys_by_score and kv_scaling == "values":
        raise ValueError("multiply_keys_by_score=True contradicts kv_scaling='values' (values only): "
                         "give one of them")
    return kv_scaling


class HeavyAttention(nn.Module):
    """queries (b, m_q, dim), kv (b, r, m_kv, dim_context) with weights (b, r, m_kv) -> (b, m_q, dim).

    kv_scaling='inputs' multiplies the key/value inputs by the kv router weight (the paper);
    'values' multiplies only the projected values (colt5-attention's behaviour).
    """

    def __init__(self, dim: int, *, heads: int, dim_head: int, num_kv_routes: int = 1,
                 dim_context: Optional[int] = None, kv_scaling: str = "inputs", rotary: bool = False):
        super().__init__()
        self.heads = _checks.positive_int("heavy_heads", heads)
        self.dim_head = _checks.positive_int("heavy_dim_head", dim_head)
        self.num_kv_routes = _checks.positive_int("num_routed_kv", num_kv_routes)
        _checks.divisible("heavy_heads", heads, "the number of key/value routes", num_kv_routes)
        self.kv_scaling = _checks.one_of("kv_scaling", kv_scaling, KV_SCALINGS)
        dim_context = dim if dim_context is None else dim_context
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        # route j's key/value projection serves heads [j·h/r, (j+1)·h/r)
        self.kv_weight = nn.Parameter(torch.randn(2, num_kv_routes, (heads // num_kv_routes) * dim_head,
                                                  dim_context) * dim_context ** -0.5)
        self.null_kv = nn.Parameter(torch.randn(2, heads, 1, dim_head) * dim_head ** -0.5)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)
        # rotary: queries and keys rotated by their positions in the sequence (colt5-attention's rotary_emb)
        self.rotary = RotaryEmbedding(dim_head) if rotary else None

    def forward(self, queries: Tensor, kv: Tensor, kv_weights: Tensor, kv_mask: Tensor,
                attn_mask: Optional[Tensor] = None, query_weights: Optional[Tensor] = None,
                positions: Optional[tuple] = None) -> Tensor:
        """attn_mask (b, m_q, r, m_kv) restricts which routed keys each query sees (causal routing);
        query_weights (b, m_q) scale the projected queries (colt5-attention's multiply_queries_by_score);
        positions, (q (b, m_q), kv (b, r, m_kv)) sequence positions, are needed with rotary."""
        b, m_q, _ = queries.shape
        _, r, m_kv, _ = kv.shape
        h, hr, d = self.heads, self.heads // r, self.dim_head
        q = self.to_q(queries).view(b, m_q, h, d).transpose(1, 2)
        if query_weights is not None:
            q = q * query_weights.view(b, 1, m_q, 1).to(q.dtype)
        w = kv_weights.unsqueeze(-1)
        if self.kv_scaling == "inputs":
            kv = kv * w.to(kv.dtype)
        weight = self.kv_weight
        if torch.is_autocast_enabled(kv.device.type):
            weight = weight.to(torch.get_autocast_dtype(kv.device.type))
        kv = torch.einsum("brmc,trec->tbrme", kv.to(weight.dtype), weight)  # (2, b, r, m_kv, hr·d)
        k, v = kv.view(2, b, r, m_kv, hr, d).permute(0, 1, 2, 4, 3, 5).reshape(2, b, h, m_kv, d)
        if self.kv_scaling == "values":
            v = v * w.view(b, r, 1, m_kv, 1).expand(b, r, hr, m_kv, 1).reshape(b, h, m_kv, 1).to(v.dtype)
        if self.rotary is not None:
            if positions is None:
                raise ValueError("rotary heavy attention needs the routed tokens' positions")
            q_pos, kv_pos = positions
            q = self.rotary.at(q, q_pos.unsqueeze(1))
            k = self.rotary.at(k, kv_pos.unsqueeze(2).expand(b, r, hr, m_kv).reshape(b, h, m_kv))
        null_k, null_v = (t.to(k.dtype).unsqueeze(0).expand(b, -1, -1, -1) for t in self.null_kv)
        k = torch.cat((null_k, k), dim=2)
        v = torch.cat((null_v, v), dim=2)
        mask = kv_mask.view(b, r, 1, m_kv)
        if attn_mask is not None:
            mask = mask & attn_mask.permute(0, 2, 1, 3)  # (b, r, m_q, m_kv)
        # route j's mask serves its hr heads; with one route SDPA broadcasts it over all heads
        # instead of a copy per head (with every position a causal query it is n × m_kv)
        if r > 1:
            mask = mask.unsqueeze(2).expand(b, r, hr, *mask.shape[2:]).reshape(b, h, *mask.shape[2:])
        mask = F.pad(mask, (1, 0), value=True)  # the null key is always visible
        out = F.scaled_dot_product_attention(q, k, v.to(q.dtype), attn_mask=mask)
        return self.to_out(out.transpose(1, 2).reshape(b, m_q, h * d))
