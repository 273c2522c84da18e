"""Causal routing: which tokens are routed may depend only on tokens before them.

A global top-k looks at the whole sequence, so in a decoder it leaks the future (colt5-attention's
autoregressive attention does). Here each token is routed by two causal rules:

- a threshold: the sequence is cut into segments of `segment_size` L. For every window of
  H consecutive segments the coordinate-descent dual a of the soft top-k is solved with the
  window's share of the steady rate, c = (m − B)/n per valid token of the window; H is
  `history`, or more where a full window needs it for c ≥ 2. Token t
  of segment j is eligible when s_t + a ≥ 0, with a the more lenient of the windows that end
  at segments j − 1 and j − 2. Of two such windows one holds none of a burst of at most L
  adjacent important tokens (a pass key's digits), so the burst does not raise its own bar.
  Segment 0 has no past and routes nothing, except for routers built with
  `route_first_segment` (key/values): there segment 0 is judged by its own dual, and the
  caller must show those tokens only to later segments. The weight is min(1, exp((s_t + a)/ε)).
- a running capacity over the whole sequence: among positions ≤ t at most
  min(m, ⌈(m − B)·(t + 1)/n⌉ + B) tokens are routed, for m = ⌈k·over_fetch⌉ slots and a burst
  reserve of B = ⌈burst·m⌉. Eligible tokens are taken first come, first served. Since the
  threshold admits tokens at the capacity's steady rate, the reserve stays for bursts, wherever
  in the sequence they come, instead of being used up by the first half of it.

n is a fixed reference length (a model's max_seq_len) when given, so a prefix routes exactly
as it does inside a longer sequence. Routed slots are in position order.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from .gather import gather_tokens
from .router import (EVAL_NOISES, Routing, adjust_scores, named_errors, raw_scores, reference_router_keywords,
                     score_noise_for, scored_input)
from .soft_topk import _check_finite, dual_per_row, eps_schedule


def to_segments(t: Tensor, segment_size: int, *, seq_dim: int = -1, fill=0.0) -> Tensor:
    """Pads the sequence dim of t up to whole segments with `fill` and splits it into
    (segments, segment_size) at that position."""
    seq_dim = seq_dim % t.ndim
    n = t.shape[seq_dim]
    segments = -(-n // segment_size)
    pad = [0, 0] * (t.ndim - 1 - seq_dim) + [0, segments * segment_size - n]
    return F.pad(t, pad, value=fill).unflatten(seq_dim, (segments, segment_size))


def windows_before(segments: Tensor, history: int, fill) -> Tensor:
    """segments (..., S, L) -> (..., S, history·L): row j holds segments j-history .. j-1 in order,
    `fill` standing in for segments before the start."""
    padded = F.pad(segments, (0, 0, history, 0), value=fill)
    windows = padded.unfold(-2, history, 1)[..., :-1, :, :]  # (..., S, L, history)
    return windows.transpose(-1, -2).flatten(-2)


def _window_stack(stats: Tensor, history: int, fill) -> Tensor:
    """stats (..., S - 1, K) of segments 0 .. S-2 -> (..., S, history, K): row j holds the stats of
    segments j-history .. j-1 in order, `fill` standing in for segments before the start."""
    padded = F.pad(stats, (0, 0, history, 0), value=fill)
    return padded.unfold(-2, history, 1).transpose(-1, -2)


def window_duals(seg_scores: Tensor, seg_valid: Tensor, segments: int, rate, eps: float) -> Tensor:
    """(b, r, S): the exact coordinate-descent dual of every window of `segments` segments before
    segment j, with budget rate·(valid tokens of the window); the same result as
    dual_per_row(windows_before(seg_scores, segments, 0.0), budget, windows_before(seg_valid, ...),
    method="exact") without building or sorting the (S, segments·L) windows. rate may be a tuple
    of rates: then (len(rate), b, r, S), one dual per rate from one pass over the candidates
    (everything but the budget is shared).

    _dual_exact takes a = max_{c < k} a_c, a_c = ε ln(k − c) − ε ln Σ_{rank ≥ c} exp(s/ε). Only the
    top c < ⌈k⌉ ≤ K = ⌈rate·segments·L⌉ + 1 of a window (all of it if K ≥ L) are taken out of the sum, and they are
    among its segments' top-K lists; everything else enters only through its log-sum-exp. So per
    segment: its top K valid scores and the log-sum-exp of the rest (relative to the segment's max,
    so no large exponentials); per window: segments·K sorted candidates and one "rest" term.
    """
    *lead, S, L = seg_scores.shape
    H = segments
    rates = tuple(rate) if isinstance(rate, (tuple, list)) else (rate,)
    K = max(1, min(L, math.ceil(max(rates) * H * L) + 1))  # ≥ ⌈k⌉ whatever float rounding does to k
    s, valid = seg_scores[..., :-1, :].float(), seg_valid[..., :-1, :]  # segment S-1 is in no window
    _check_finite(s, valid)
    with torch.no_grad():
        x = torch.where(valid, s, float("-inf"))
        top, idx = x.topk(K, dim=-1)  # (..., S-1, K), high to low, -inf past the valid count
        seg_max = top[..., :1]
        seg_max_safe = torch.where(torch.isfinite(seg_max), seg_max, 0.0)
        rest = x.scatter(-1, idx, float("-inf")) if K < L else x[..., :0]
        rest = torch.logsumexp((rest - seg_max_safe) / eps, -1, keepdim=True)  # -inf when nothing is left
        count = valid.sum(-1, keepdim=True)

        cand = _window_stack(top, H, float("-inf")).flatten(-2)  # (..., S, H·K)
        win_max = _window_stack(seg_max, H, float("-inf"))[..., 0]  # (..., S, H)
        win_max_safe = _window_stack(seg_max_safe, H, 0.0)[..., 0]
        win_rest = _window_stack(rest, H, float("-inf"))[..., 0]
        n_valid = _window_stack(count, H, 0)[..., 0].sum(-1, keepdim=True)  # (..., S, 1)

        shift = win_max.amax(-1, keepdim=True)  # the window's largest valid score, as _shifted
        shift = torch.where(torch.isfinite(shift), shift, 0.0)
        z = ((cand - shift) / eps).sort(dim=-1, descending=True).values
        rest_all = torch.logsumexp(win_rest + (win_max_safe - shift) / eps, -1, keepdim=True)
        z = torch.cat([z, rest_all], -1)
        # ln Σ over the window's ranks ≥ c: exact for c < min(K, H·L) ≥ ⌈k⌉, the only c with room > 0
        tail = torch.logcumsumexp(z.flip(-1), dim=-1).flip(-1)[..., :-1]

        budget = torch.stack([r * n_valid for r in rates])  # (rates, ..., S, 1)
        k = torch.minimum(budget, n_valid.float())  # as dual_per_row and _dual_exact, rounding included
        k_exact = torch.exp(torch.log(k.clamp_min(1e-30)))
        room = k_exact - torch.arange(H * K, device=s.device, dtype=torch.float32)
        a_c = eps * torch.log(room.clamp_min(1e-30)) - eps * tail
        a_c = torch.where((room > 0) & torch.isfinite(tail), a_c, float("-inf"))
        a = a_c.amax(-1, keepdim=True)
        empty = (n_valid == 0) | (k <= 0)
        duals = torch.where(empty, float("-inf"), a - shift)[..., 0]
        return duals if isinstance(rate, (tuple, list)) else duals[0]


def judging_window(slots: int, burst: int, reference_len: int, segment_size: int, history: int) -> tuple:
    """(segments, rate): how many segments a threshold is solved over, and the share of a
    window's tokens it may route, the running capacity's steady rate. The window grows past
    `history` segments until a full one may route at least 2 tokens (never past the reference
    length): a budget below 1 would leave no token of the window itself eligible, and
    eligibility would no longer track the rate."""
    rate = max(slots - burst, 1) / reference_len
    segments = max(history, math.ceil(2.0 / (rate * segment_size)))
    return min(segments, max(history, -(-reference_len // segment_size))), rate


def running_capacity(seq_len: int, reference_len: int, slots: int, burst: int, device) -> Tensor:
    """(seq_len,) long: how many tokens at positions ≤ t may be routed, never above `slots`."""
    t = torch.arange(1, seq_len + 1, device=device)
    steady = torch.div((slots - burst) * t + reference_len - 1, reference_len, rounding_mode="floor")
    return (steady + burst).clamp_max(slots)


def first_come_within(eligible: Tensor, capacity: Tensor) -> Tensor:
    """eligible (..., n) bool, capacity (n,) non-decreasing -> routed (..., n) bool.

    Routes each eligible token while fewer than capacity[t] were routed up to t: the greedy
    recursion R_t = min(R_{t-1} + e_t, c_t) in closed form, R_t = E_t + min(0, min_{j≤t} (c_j − E_j))
    with E the running count of eligible tokens, so it is one cumsum and one cummin.
    """
    E = eligible.long().cumsum(-1)
    R = E + (capacity - E).cummin(-1).values.clamp_max(0)
    return torch.diff(R, dim=-1, prepend=torch.zeros_like(R[..., :1])) > 0


class CausalRouter(nn.Module):
    """Routes each token by a threshold from earlier segments under a running capacity (see module doc).

    Takes `num_routing_tokens` sets of scores like Router (one per key/value route).
    """

    def __init__(self, dim: int, *, segment_size: int, reference_len: Optional[int] = None,
                 num_routing_tokens: int = 1, straight_through: bool = False,
                 over_fetch: float = 9 / 8, n_iters: int = 20, eps: float = 0.03,
                 eps_init: Optional[float] = 4.0, eps_decay: float = 0.7, method: str = "exact",
                 fused: Optional[bool] = None, history: int = 4, burst: float = 0.5,
                 score_noise: float = 0.0, route_first_segment: bool = False,
                 router_type: str = "coor_descent", detach_input: bool = False, fetch_k_ratio: Optional[float] = None,
                 cosine_sim_routing: bool = False, cosine_sim_scale: float = 8.0, use_triton: bool = False,
                 triton_checkpoint_segments: Optional[int] = None, eval_noise: str = "none"):
        super().__init__()
        self.dim = _checks.positive_int("dim", dim)
        self.segment_size = _checks.positive_int("segment_size", segment_size)
        self.reference_len = None if reference_len is None else _checks.positive_int("reference_len", reference_len)
        self.num_routing_tokens = _checks.positive_int("num_routing_tokens", num_routing_tokens)
        self.router_type = router_type  # kept for the monitor; the threshold is the coordinate-descent dual
        if router_type != "coor_descent":
            warnings.warn(f"router_type={router_type!r} has no effect on causal routing (a decoder's routers): "
                          "its thresholds are always coordinate-descent duals", UserWarning, stacklevel=2)
        self.straight_through = bool(straight_through)
        self.detach_input = bool(detach_input)  # as Router's
        self.over_fetch, self.cosine_sim_scale = reference_router_keywords(over_fetch, fetch_k_ratio,
                                                                           cosine_sim_routing, cosine_sim_scale)
        self.history = _checks.positive_int("history", history)
        if not 0.0 <= burst <= 1.0:
            raise ValueError(f"burst must be a fraction of the routed slots in [0, 1], got {burst}")
        self.burst = float(burst)
        self.score_noise = _checks.non_negative_number("score_noise", score_noise)
        self.eval_noise = _checks.one_of("eval_noise", eval_noise, EVAL_NOISES)  # as Router's
        self.route_first_segment = bool(route_first_segment)
        self.label = "causal router"  # its module path once a NonFiniteGuard has named it
        self.forced: Optional[Tensor] = None  # (b, n) bool: positions routed by hand (see routing.oracle)
        self.solver = dict(n_iters=_checks.positive_int("n_iters", n_iters), eps=_checks.positive_number("eps", eps),
                           eps_init=eps_init, eps_decay=eps_decay, method=method, fused=fused)
        self.eps = eps_schedule(n_iters, eps, eps_init, eps_decay)[-1] if method == "iterative" else eps
        self.routing_tokens = nn.Parameter(torch.randn(num_routing_tokens, dim) * dim ** -0.5)

    def num_slots(self, num_tokens: int, seq_len: int, training: Optional[bool] = None) -> int:
        """Slots per routing token: ⌈k·over_fetch⌉ while training, k in eval, at most the reference length."""
        fetch = self.over_fetch if (self.training if training is None else training) else 1.0
        return max(1, min(self.reference_len or seq_len, math.ceil(num_tokens * fetch)))

    def steady_budget(self, num_tokens: int, seq_len: int) -> float:
        """The weight a sequence of seq_len tokens carries in eval at the steady rate, (k − B)·seq_len/n."""
        k = self.num_slots(num_tokens, seq_len, training=False)
        return (k - math.ceil(self.burst * k)) * seq_len / (self.reference_len or seq_len)

    def forward(self, x: Tensor, *, num_tokens: int, mask: Optional[Tensor] = None,
                random_route: bool = False, score_input: Optional[Tensor] = None) -> Routing:
        """random_route: route by random scores instead of learned ones (a negative control; still causal).
        score_input: (b, n, d) scored instead of x (x's tokens are still the ones routed)."""
        _checks.features("x", x, self.dim)
        b, n, _ = x.shape
        mask = _checks.mask_for("mask", mask, (b, n), "x (batch, seq)")
        if isinstance(num_tokens, Tensor):
            raise TypeError("causal routing takes num_tokens (num_heavy_tokens_q, num_heavy_ff_tokens) as "
                            "an int: a per-sample count would need the whole sequence to be known")
        _checks.positive_int("num_tokens", num_tokens)
        L, r = self.segment_size, self.num_routing_tokens
        if self.reference_len is not None and n > self.reference_len:
            raise ValueError(f"input length {n} exceeds the causal router's reference_len {self.reference_len} "
                             "(a model's max_seq_len): positions past it could never be routed")
        reference = self.reference_len or n
        clean = raw_scores(scored_input(x, score_input, self.detach_input), self.routing_tokens,
                           self.cosine_sim_scale)  # (b, r, n)
        noise = score_noise_for(clean, self.score_noise, self.training, self.eval_noise)
        scores = adjust_scores(clean, noise, self.forced, random_route)
        valid = (torch.ones(b, n, dtype=torch.bool, device=x.device) if mask is None else mask)
        valid = valid.unsqueeze(1).expand(b, r, n)

        seg_scores, seg_valid = to_segments(scores.detach(), L), to_segments(valid, L, fill=False)

        def window_duals_of(judged: list) -> list:  # [(b, r, S)] for each (segments, rate)
            if self.solver["method"] != "exact":
                duals = []
                for segments, rate in judged:
                    window_valid = windows_before(seg_valid, segments, False)
                    budget = rate * window_valid.sum(-1, keepdim=True)
                    duals.append(dual_per_row(windows_before(seg_scores, segments, 0.0), budget, window_valid,
                                              **self.solver)[..., 0])
                return duals
            if len({segments for segments, _ in judged}) == 1:  # one pass over the candidates serves all
                return list(window_duals(seg_scores, seg_valid, judged[0][0], tuple(r for _, r in judged),
                                         self.solver["eps"]).unbind(0))
            return [window_duals(seg_scores, seg_valid, segments, rate, self.solver["eps"])
                    for segments, rate in judged]

        def threshold(dual: Tensor, segments: int, rate: float) -> Tensor:  # (b, r, n): each token's dual
            before = torch.maximum(dual, F.pad(dual[..., :-1], (1, 0), value=float("-inf")))
            if self.route_first_segment:  # segment 0 alone is judged by itself, with a full window's rate
                own_valid = seg_valid[..., 0, :]
                own_budget = rate * segments * own_valid.sum(-1, keepdim=True)
                own = dual_per_row(seg_scores[..., 0, :], own_budget, own_valid, **self.solver)
                before = torch.cat([own, before[..., 1:]], -1)
            return before.unsqueeze(-1).expand(*before.shape, L).flatten(-2)[..., :n]

        k = self.num_slots(num_tokens, n, training=False)
        m = self.num_slots(num_tokens, n)
        judged = [judging_window(slots, math.ceil(self.burst * slots), reference, L, self.history)
                  for slots in ((k,) if m == k else (k, m))]  # (segments, rate) of each threshold
        with named_errors(self.label):  # windows cut by the start route less
            thresholds = [threshold(dual, *window) for dual, window in zip(window_duals_of(judged), judged)]
        a, a_fetch = thresholds[0], thresholds[-1]
        eligible = valid & (scores.detach() + a_fetch >= 0)

        capacity = running_capacity(n, reference, m, math.ceil(self.burst * m), x.device)
        forced = None
        if self.forced is not None:  # routing by hand: exactly the forced tokens (first m), at weight 1
            forced = valid & self.forced.to(x.device).unsqueeze(1)
            eligible, capacity = forced, torch.full_like(capacity, m)
        routed = first_come_within(eligible, capacity)
        slot = routed.long().cumsum(-1) - 1
        position = torch.arange(n, device=x.device).expand(b, r, n)
        indices = torch.zeros(b, r, m + 1, dtype=torch.long, device=x.device)
        indices = indices.scatter(-1, torch.where(routed, slot, m), position)[..., :m]
        slot_valid = torch.arange(m, device=x.device) < routed.sum(-1, keepdim=True)

        weights_all = torch.exp(torch.clamp(scores + torch.nan_to_num(a, neginf=-1e30), max=0.0) / self.eps)
        weights_all = torch.where(valid & torch.isfinite(a), weights_all, 0.0)
        if forced is not None:
            weights_all = torch.where(forced, 1.0, weights_all)
        weights = weights_all.gather(-1, indices)
        if self.straight_through:
            weights = weights + (1.0 - weights).detach()
        weights = weights * slot_valid
        return Routing(indices=indices, weights=weights, routed_mask=slot_valid,
                       tokens=gather_tokens(x, indices), scores=scores, all_weights=weights_all,
                       num_tokens=num_tokens)
