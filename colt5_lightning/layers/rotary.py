"""Rotary position embeddings (Su et al. 2021) for queries and keys of shape (b, n, heads, dim_head).

Rotating q and k by their absolute positions makes their dot product depend on the distance
between them only, which is what a sliding window needs: the light branch then knows how far
each neighbour is, whatever the sequence length it was trained on.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _checks


class RotaryEmbedding(nn.Module):
    """Rotates every feature pair of each head by position · base^(-2i/dim_head)."""

    def __init__(self, dim_head: int, *, base: float = 10000.0):
        super().__init__()
        _checks.positive_int("dim_head", dim_head)
        if dim_head % 2:
            raise ValueError(f"rotary embeddings need an even dim_head, got {dim_head}")
        inv_freq = base ** (-torch.arange(0, dim_head, 2, dtype=torch.float32) / dim_head)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple:
        n = q.shape[1]
        positions = torch.arange(offset, offset + n, device=q.device, dtype=torch.float32)
        angles = positions[:, None] * self.inv_freq.to(q.device)[None, :]  # (n, d/2)
        cos = angles.cos()[None, :, None, :]
        sin = angles.sin()[None, :, None, :]
        return _rotate(q, cos, sin), _rotate(k, cos, sin)

    def at(self, x: Tensor, positions: Tensor) -> Tensor:
        """x (..., m, dim_head) rotated by positions (..., m): each token by its own position, as
        the heavy branch needs for routed tokens gathered from anywhere in the sequence."""
        angles = positions.to(torch.float32).unsqueeze(-1) * self.inv_freq.to(x.device)  # (..., m, d/2)
        return _rotate(x, angles.cos(), angles.sin())


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    # x (..., d) with cos, sin broadcasting to (..., d/2)
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    return out.to(x.dtype)
