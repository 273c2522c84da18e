"""topk: a differentiable top-k with colt5-attention's signature and return value.

The forward is torch.topk of x·gates, where gates are 1 in value and carry the gradient of the
coordinate-descent soft top-k weights (solved for k·coor_descent_k_ratio, as CoLT5 over-fetches).
"""
from __future__ import annotations

from collections import namedtuple
from typing import Optional

import torch
from torch import Tensor

from .. import _checks
from .soft_topk import coor_descent

TopkReturn = namedtuple("TopkReturn", ["values", "indices", "coor_descent_values", "gates"])


def topk(x: Tensor, k: int, coor_descent_k_ratio: float = 9 / 8, n_iters: int = 20, eps: float = 0.1,
         eps_init: Optional[float] = None, eps_decay: float = 1.0, mask: Optional[Tensor] = None,
         fused: bool = False, non_differentiable: bool = False) -> TopkReturn:
    """Top k of x along its last dim -> (values, indices, coor_descent_values, gates), each (..., k).

    values are x·gates at the k largest entries; gates equal 1 forward and pass the gradient of
    the soft top-k weights, which coor_descent_values hold. non_differentiable=True is plain
    torch.topk (the last two fields None). fused=True takes the compiled solver on CUDA; results
    are the same either way.
    """
    k = _checks.positive_int("k", k)
    if not coor_descent_k_ratio >= 1:
        raise ValueError(f"coor_descent_k_ratio must be >= 1, got {coor_descent_k_ratio}")
    if non_differentiable:
        values, indices = torch.topk(x, k, dim=-1)
        return TopkReturn(values, indices, None, None)
    with torch.autocast(device_type=x.device.type, enabled=False):
        weights = coor_descent(x.float(), k=min(k * coor_descent_k_ratio, x.shape[-1]), n_iters=n_iters, eps=eps,
                               eps_init=eps_init, eps_decay=eps_decay, mask=mask,
                               fused=None if fused else False).to(x.dtype)
    gates = weights + (1 - weights).detach()
    values, indices = torch.topk(x * gates, k, dim=-1)
    return TopkReturn(values, indices, weights.gather(-1, indices), gates.gather(-1, indices))
