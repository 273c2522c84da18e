"""The dense baseline: a pre-norm transformer block of full attention (SDPA) and one FF."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from .routed_common import FeedForward


class DenseAttention(nn.Module):
    def __init__(self, dim: int, *, heads: int = 8, dim_head: int = 64, causal: bool = False):
        super().__init__()
        self.heads = _checks.positive_int("heads", heads)
        self.dim_head = _checks.positive_int("dim_head", dim_head)
        self.causal = causal
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(self.norm(x)).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        attn_mask = None
        if mask is not None:
            # padded keys are hidden; a query always sees itself so padded rows stay finite
            attn_mask = mask.view(b, 1, 1, n) | torch.eye(n, dtype=torch.bool, device=x.device)
            if self.causal:
                attn_mask = attn_mask & torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             is_causal=self.causal and attn_mask is None)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class DenseTransformerBlock(nn.Module):
    """x (b, n, dim) -> (b, n, dim): x + attn(norm x), then + ff(norm x), hidden = dim·ff_mult."""

    def __init__(self, dim: int, *, heads: int = 8, dim_head: int = 64, ff_mult: float = 4,
                 causal: bool = False):
        super().__init__()
        self.dim = _checks.positive_int("dim", dim)
        self.attn = DenseAttention(dim, heads=heads, dim_head=dim_head, causal=causal)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, _checks.positive_number("ff_mult", ff_mult))

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        _checks.features("x", x, self.dim)
        mask = _checks.mask_for("mask", mask, x.shape[:2], "x (batch, seq)")
        x = x + self.attn(x, mask)
        return x + self.ff(self.ff_norm(x))
