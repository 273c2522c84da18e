"""Light-branch attention: blocked local attention over a sequence, and 2-D window attention
over a feature map, both through torch.nn.functional.scaled_dot_product_attention."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks


def _shift_blocks(x: Tensor, offset: int, fill) -> Tensor:
    """Blocks (..., nw, w, d): offset +1 gives each block its predecessor, -1 its successor."""
    nw = x.shape[-3]
    padded = F.pad(x, (0, 0, 0, 0) + ((1, 0) if offset > 0 else (0, 1)), value=fill)
    return padded[..., :nw, :, :] if offset > 0 else padded[..., 1:, :, :]


def blocked_local_attention(q: Tensor, k: Tensor, v: Tensor, *, window: int, causal: bool,
                            key_mask: Optional[Tensor] = None) -> Tensor:
    """q, k, v (b, h, n, d). Tokens are cut into blocks of `window`; each block attends to
    itself and its neighbours (previous and next, or only previous when causal, with a causal
    mask). A query always sees itself, so padded queries give finite (ignored) outputs."""
    b, h, n, d = q.shape
    pad = (-n) % window
    if key_mask is None:
        key_mask = torch.ones(b, n, dtype=torch.bool, device=q.device)
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        key_mask = F.pad(key_mask, (0, pad), value=False)
    nw = (n + pad) // window
    q, k, v = (t.view(b, h, nw, window, d) for t in (q, k, v))
    km = key_mask.view(b, 1, nw, window, 1)

    neighbours = [1, 0] if causal else [1, 0, -1]
    ks = torch.cat([k if o == 0 else _shift_blocks(k, o, 0.0) for o in neighbours], dim=-2)
    vs = torch.cat([v if o == 0 else _shift_blocks(v, o, 0.0) for o in neighbours], dim=-2)
    kms = torch.cat([km if o == 0 else _shift_blocks(km, o, False) for o in neighbours], dim=-2)

    qi = torch.arange(window, device=q.device).view(window, 1)
    kj = torch.arange(len(neighbours) * window, device=q.device).view(1, -1)
    self_pos = qi + window  # the query's own slot among the keys (the current block is second)
    allowed = kms.squeeze(-1).unsqueeze(-2)  # (b, 1, nw, 1, L)
    if causal:
        allowed = allowed & (kj <= self_pos)
    allowed = allowed | (kj == self_pos)
    out = F.scaled_dot_product_attention(q, ks, vs, attn_mask=allowed)
    return out.reshape(b, h, nw * window, d)[:, :, :n]


def window_attention_2d(q: Tensor, k: Tensor, v: Tensor, *, window: int,
                        key_mask: Optional[Tensor] = None) -> Tensor:
    """q, k, v (b, h, H, W, d): attention inside non-overlapping window×window tiles."""
    b, h, H, W, d = q.shape

    def tiles(t: Tensor) -> Tensor:
        t = t.reshape(b, h, H // window, window, W // window, window, -1)
        return t.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, h, -1, window * window, t.shape[-1])

    mask = None
    if key_mask is not None:
        km = tiles(key_mask.view(b, 1, H, W, 1).expand(b, 1, H, W, 1)).squeeze(-1)  # (b, 1, T, w²)
        eye = torch.eye(window * window, dtype=torch.bool, device=q.device)
        mask = km.unsqueeze(-2) | eye
    out = F.scaled_dot_product_attention(tiles(q), tiles(k), tiles(v), attn_mask=mask)
    out = out.view(b, h, H // window, W // window, window, window, d).permute(0, 1, 2, 4, 3, 5, 6)
    return out.reshape(b, h, H, W, d)


class LocalAttention(nn.Module):
    """Multi-head blocked local attention on already-normalised input (b, n, dim)."""

    def __init__(self, dim: int, *, heads: int, dim_head: int, window_size: int, causal: bool = False):
        super().__init__()
        self.heads = _checks.positive_int("light_heads", heads)
        self.dim_head = _checks.positive_int("light_dim_head", dim_head)
        self.window_size = _checks.positive_int("light_window_size", window_size)
        self.causal = causal
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        out = blocked_local_attention(q, k, v, window=self.window_size, causal=self.causal, key_mask=mask)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class WindowAttention2d(nn.Module):
    """Multi-head attention inside window×window tiles of a (b, H, W, dim) feature map."""

    def __init__(self, dim: int, *, heads: int, dim_head: int, window_size: int):
        super().__init__()
        self.heads = _checks.positive_int("light_heads", heads)
        self.dim_head = _checks.positive_int("light_dim_head", dim_head)
        self.window_size = _checks.positive_int("light_window_size", window_size)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        b, H, W, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, H, W, 3, self.heads, self.dim_head).permute(3, 0, 4, 1, 2, 5)
        out = window_attention_2d(q, k, v, window=self.window_size, key_mask=mask)
        return self.to_out(out.permute(0, 2, 3, 1, 4).reshape(b, H, W, -1))
