"""Gather routed tokens out of a sequence and scatter results back onto it."""
from __future__ import annotations

from torch import Tensor


def gather_tokens(x: Tensor, indices: Tensor) -> Tensor:
    """x (b, n, d), indices (b, r, m) -> (b, r, m, d)."""
    b, r, m = indices.shape
    flat = indices.reshape(b, r * m, 1).expand(-1, -1, x.shape[-1])
    return x.gather(1, flat).view(b, r, m, x.shape[-1])


def scatter_add_tokens(out: Tensor, indices: Tensor, values: Tensor) -> Tensor:
    """out (b, n, d) + values (b, r, m, d) added at indices (b, r, m); out-of-place, any dtype mix."""
    b, r, m = indices.shape
    flat = indices.reshape(b, r * m, 1).expand(-1, -1, out.shape[-1])
    return out.scatter_add(1, flat, values.reshape(b, r * m, -1).to(out.dtype))
