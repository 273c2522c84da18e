"""Causal routing: which tokens are routed may depend only on tokens before them.

A global top-k looks at the whole sequence, so in a decoder it leaks the future (colt5-attention's
autoregressive attention does). Here the sequence is cut into segments of `segment_size`:

- tokens (queries, FF inputs) of segment j are routed by a threshold learned on segment j-1:
  the coordinate-descent dual a_{j-1} of that segment's scores; token t is eligible when
  s_t + a'_{j-1} >= 0 (a' for the over-fetched count) and is kept while fewer than the
  segment's capacity were kept before it. Its weight is min(1, exp((s_t + a_{j-1}) / ε)).
  Segment 0 has no past and routes nothing.
- key/values of segment i are routed by the ordinary soft top-k inside segment i and may be
  seen only by queries of later segments.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from .gather import gather_tokens
from .router import Router, Routing
from .soft_topk import coor_descent_dual, eps_schedule


def per_segment(num_tokens: int, seq_len: int, segment_size: int) -> int:
    """A budget of k tokens for a seq_len-long sequence spread over segments: ⌈k·L/n⌉, within [1, L].

    Callers pass a fixed reference length (a model's max_seq_len), not the input's length, so a
    prefix routes exactly as it does inside a longer sequence.
    """
    return max(1, min(segment_size, math.ceil(num_tokens * segment_size / max(seq_len, 1))))


def to_segments(t: Tensor, segment_size: int, *, seq_dim: int = -1, fill=0.0) -> Tensor:
    """Pads the sequence dim of t up to whole segments with `fill` and splits it into
    (segments, segment_size) at that position."""
    seq_dim = seq_dim % t.ndim
    n = t.shape[seq_dim]
    segments = -(-n // segment_size)
    pad = [0, 0] * (t.ndim - 1 - seq_dim) + [0, segments * segment_size - n]
    return F.pad(t, pad, value=fill).unflatten(seq_dim, (segments, segment_size))


class CausalRouter(nn.Module):
    """Routes tokens of segment j by the threshold learned on segment j-1 (see module doc)."""

    def __init__(self, dim: int, *, segment_size: int, reference_len: Optional[int] = None,
                 straight_through: bool = False,
                 over_fetch: float = 9 / 8, n_iters: int = 20, eps: float = 0.03,
                 eps_init: Optional[float] = 4.0, eps_decay: float = 0.7, method: str = "exact",
                 fused: Optional[bool] = None,
                 router_type: str = "coor_descent"):
        super().__init__()
        self.dim = _checks.positive_int("dim", dim)
        self.segment_size = _checks.positive_int("segment_size", segment_size)
        self.reference_len = None if reference_len is None else _checks.positive_int("reference_len", reference_len)
        self.router_type = router_type  # kept for the monitor; the threshold is the coordinate-descent dual
        self.straight_through = bool(straight_through)
        if not over_fetch >= 1.0:
            raise ValueError(f"over_fetch must be >= 1, got {over_fetch}")
        self.over_fetch = float(over_fetch)
        self.solver = dict(n_iters=_checks.positive_int("n_iters", n_iters), eps=_checks.positive_number("eps", eps),
                           eps_init=eps_init, eps_decay=eps_decay, method=method, fused=fused)
        self.eps = eps_schedule(n_iters, eps, eps_init, eps_decay)[-1] if method == "iterative" else eps
        self.num_routing_tokens = 1
        self.routing_tokens = nn.Parameter(torch.randn(1, dim) * dim ** -0.5)

    def forward(self, x: Tensor, *, num_tokens: int, mask: Optional[Tensor] = None) -> Routing:
        _checks.features("x", x, self.dim)
        b, n, _ = x.shape
        mask = _checks.mask_for("mask", mask, (b, n), "x (batch, seq)")
        if isinstance(num_tokens, Tensor):
            raise TypeError("causal routing takes num_tokens (num_heavy_tokens_q, num_heavy_ff_tokens) as "
                            "an int: a per-sample count would need the whole sequence to be known")
        _checks.positive_int("num_tokens", num_tokens)
        L = self.segment_size
        with torch.autocast(device_type=x.device.type, enabled=False):
            scores = F.linear(x.float(), self.routing_tokens.float())[..., 0]
        valid = torch.ones(b, n, dtype=torch.bool, device=x.device) if mask is None else mask
        seg_scores = to_segments(scores, L)
        seg_valid = to_segments(valid, L, fill=False)
        S = seg_scores.shape[1]

        k = per_segment(num_tokens, self.reference_len or n, L)
        capacity = min(L, math.ceil(k * (self.over_fetch if self.training else 1.0)))
        a = coor_descent_dual(seg_scores.detach(), k=k, mask=seg_valid, **self.solver)
        a_fetch = a if capacity == k else coor_descent_dual(seg_scores.detach(), k=capacity,
                                                            mask=seg_valid, **self.solver)
        # shift by one segment: segment j is judged by segment j-1's thresholds; segment 0 by none
        a_prev = F.pad(a, (0, 0, 1, 0), value=float("-inf"))[:, :S]
        a_fetch_prev = F.pad(a_fetch, (0, 0, 1, 0), value=float("-inf"))[:, :S]

        eligible = seg_valid & (seg_scores.detach() + a_fetch_prev >= 0)
        keep = eligible & (eligible.long().cumsum(-1) <= capacity)
        position = torch.arange(L, device=x.device)
        priority = torch.where(keep, L - position, 0)
        local = priority.topk(capacity, dim=-1).indices  # kept tokens first, earliest first
        slot_valid = keep.gather(-1, local)
        weights_all = torch.exp(torch.clamp(seg_scores + torch.nan_to_num(a_prev, neginf=-1e30), max=0.0)
                                / self.eps)
        weights_all = torch.where(seg_valid & torch.isfinite(a_prev), weights_all, 0.0)
        weights = weights_all.gather(-1, local)
        if self.straight_through:
            weights = weights + (1.0 - weights).detach()
        weights = weights * slot_valid

        indices = (local + torch.arange(S, device=x.device).view(1, S, 1) * L).clamp_max(n - 1)
        indices, weights, slot_valid = (t.reshape(b, 1, S * capacity) for t in (indices, weights, slot_valid))
        return Routing(indices=indices, weights=weights, routed_mask=slot_valid,
                       tokens=gather_tokens(x, indices), scores=scores.unsqueeze(1),
                       all_weights=weights_all.reshape(b, 1, S * L)[..., :n], num_tokens=num_tokens)


def route_within_segments(router: Router, x: Tensor, *, num_tokens: int, segment_size: int,
                          mask: Optional[Tensor], reference_len: Optional[int] = None) -> Routing:
    """Ordinary soft top-k inside each segment; indices are global, slots ordered by segment."""
    b, n, d = x.shape
    L = segment_size
    valid = torch.ones(b, n, dtype=torch.bool, device=x.device) if mask is None else mask
    xs = to_segments(x, L, seq_dim=1).flatten(0, 1)  # (b·S, L, d)
    vs = to_segments(valid, L, fill=False).flatten(0, 1)
    S = xs.shape[0] // b
    k = per_segment(num_tokens, reference_len or n, L)
    inner = router(xs, num_tokens=k, mask=vs)
    r, m = inner.indices.shape[1:]

    def regroup(t: Tensor) -> Tensor:  # (b·S, r, m) -> (b, r, S·m)
        return t.view(b, S, r, m).transpose(1, 2).reshape(b, r, S * m)

    offsets = (torch.arange(S, device=x.device) * L).view(S, 1, 1).repeat(b, 1, 1)
    indices = regroup((inner.indices + offsets).clamp_max(n - 1))
    return Routing(indices=indices, weights=regroup(inner.weights), routed_mask=regroup(inner.routed_mask),
                   tokens=gather_tokens(x, indices), scores=inner.scores.view(b, S, r, L).transpose(1, 2)
                   .reshape(b, r, S * L)[..., :n],
                   all_weights=inner.all_weights.view(b, S, r, L).transpose(1, 2).reshape(b, r, S * L)[..., :n],
                   num_tokens=num_tokens)
