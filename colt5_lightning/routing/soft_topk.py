"""Soft top-k solvers: scores (..., n) -> weights in [0, 1], all O(n) memory.

Every solver runs in float32 whatever the autocast dtype, takes an optional boolean mask
(False = padding: weight 0, never selected) and k as a positive number or a per-sample
integer tensor of shape (batch,). Coordinate descent meets a fractional k exactly (Σ weights =
k); cum_softmax keeps ⌈k⌉ tokens, broadcast over the remaining leading dims.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .. import _checks

K = Union[int, float, Tensor]

__all__ = ["coor_descent", "coor_descent_dual", "dual_per_row", "sinkhorn_topk", "cum_softmax_topk", "eps_schedule"]


def _prepare(s: Tensor, k: K, mask: Optional[Tensor]):
    """float32 scores shifted so that each row's largest valid score is 0, a validity mask, k
    clamped to [0, n_valid] and the shift, all broadcastable.

    Every solver's weights are invariant to a constant added to a row; solving on shifted scores
    makes that hold in float32 too (at +1e6 the unshifted exponentials lose the scores' spread).
    """
    if not isinstance(s, Tensor) or not s.dtype.is_floating_point:
        raise TypeError("s must be a floating-point tensor of scores (..., n)")
    if s.ndim < 1 or s.shape[-1] == 0:
        raise ValueError(f"s must have a non-empty last dim, got shape {tuple(s.shape)}")
    s = s.float()
    valid = torch.ones_like(s, dtype=torch.bool) if mask is None else _checks.mask_for("mask", mask, s.shape, "s")
    n_valid = valid.sum(-1, keepdim=True).float()
    k = _checks.budget("k", k)
    if isinstance(k, Tensor):
        if s.ndim < 2 or k.shape[0] != s.shape[0]:
            raise ValueError(f"k as a tensor must have shape ({s.shape[0] if s.ndim > 1 else '?'},) "
                             f"matching the batch dim of s {tuple(s.shape)}, got {tuple(k.shape)}")
        k = k.to(device=s.device, dtype=torch.float32).view(-1, *([1] * (s.ndim - 1)))
    else:
        k = torch.full((1,) * s.ndim, float(k), device=s.device)
    k = torch.minimum(k, n_valid)
    s, shift = _shifted(s, valid)
    return s, valid, k, shift


def _check_finite(s: Tensor, valid: Tensor) -> None:
    """A ValueError (NonFiniteError) for NaN or +inf scores at valid positions."""
    if not torch.compiler.is_compiling() and bool(((torch.isnan(s) | (s == float("inf"))) & valid).any()):
        raise _checks.NonFiniteError("s (the routing scores) holds NaN or +inf at unmasked positions: the router's input "
                         "or its routing tokens are not finite (has training diverged?)")


def _shifted(s: Tensor, valid: Tensor):
    """(s − shift, shift) with shift (..., 1) each row's largest valid score (0 for empty rows);
    a ValueError for NaN or +inf scores at valid positions."""
    _check_finite(s, valid)
    shift = torch.where(valid, s, float("-inf")).amax(-1, keepdim=True).detach()
    shift = torch.where(torch.isfinite(shift), shift, 0.0)
    return s - shift, shift


def eps_schedule(n_iters: int, eps: float, eps_init: Optional[float], eps_decay: float) -> tuple:
    """ε per iteration: ε_init·decay^t, never below ε (ε-scaling, Lei et al. 2023)."""
    _checks.positive_int("n_iters", n_iters)
    _checks.positive_number("eps", eps)
    _checks.positive_number("eps_decay", eps_decay)
    if eps_init is None:
        return (float(eps),) * n_iters
    _checks.positive_number("eps_init", eps_init)
    return tuple(max(eps, eps_init * eps_decay ** t) for t in range(n_iters))


def _dual_exact(s: Tensor, log_k: Tensor, valid: Tensor, schedule: Sequence[float]) -> Tensor:
    """The fixed point of the coordinate descent, solved directly at the schedule's final ε.

    The optimum of max s.λ + εH(λ), Σλ = k, 0 ≤ λ ≤ 1 is λ_i = min(1, exp((s_i + a)/ε)) for a
    scalar dual a. With scores sorted high to low and the top c taken as saturated,
    a_c = ε ln(k − c) − ε ln Σ_{j ≥ c} exp(s_j/ε) gives Σλ(a_c) ≤ k for every c (min(1, ·) ≤ ·),
    with equality at the true c, so a = max_{c < k} a_c: one sort and one reverse
    log-cumsum-exp, O(n) memory, exact whatever the spread of the scores.
    """
    eps = schedule[-1]
    k = torch.exp(log_k)
    z = torch.where(valid, s / eps, float("-inf")).sort(dim=-1, descending=True).values
    tail = torch.logcumsumexp(z.flip(-1), dim=-1).flip(-1)  # tail[c] = ln Σ_{j ≥ c} exp(z_j)
    room = k - torch.arange(s.shape[-1], device=s.device, dtype=s.dtype)
    a_c = eps * torch.log(room.clamp_min(1e-30)) - eps * tail
    a_c = torch.where((room > 0) & torch.isfinite(tail), a_c, float("-inf"))
    return a_c.amax(-1, keepdim=True)


def _dual_iterations(s: Tensor, log_k: Tensor, valid: Tensor, schedule: Sequence[float]) -> Tensor:
    """The ε-scaled coordinate descent itself: one dual step per ε of the schedule.

    The update of Qian et al. reads a = ε ln k − ε ln Σ exp((s + b)/ε), b = min(−s − a, 0).
    Saturated tokens (s + a ≥ 0) enter that sum as exp(−a/ε), which slows it to a geometric rate
    (#saturated / k): 20–30% off Σλ = k after 20 steps at ε = 0.03 on N(0, 1) scores. Here they
    are taken out exactly, a = ε ln(k − c) − ε ln Σ_free exp(s/ε) (a Newton step on the scalar
    dual), which with ε-scaling from 4 reaches 1e-7 in 20 steps on scores of spread up to ~10.
    Scores far more spread than eps_init saturate only a few tokens per step and stop short:
    the 'exact' method has no such limit.
    """
    eps0 = schedule[0]
    a = eps0 * log_k - eps0 * torch.logsumexp(torch.where(valid, s / eps0, float("-inf")), -1, keepdim=True)
    k = torch.exp(log_k)
    for eps in schedule:
        saturated = valid & (s + a >= 0)
        room = k - saturated.sum(-1, keepdim=True)
        lse = torch.logsumexp(torch.where(valid & ~saturated, s / eps, float("-inf")), -1, keepdim=True)
        a = torch.where(room > 0, eps * torch.log(room.clamp_min(1e-30)) - eps * lse, a)
    return a


METHODS = {"exact": _dual_exact, "iterative": _dual_iterations}


_compiled = {}


def _solve_dual(s, log_k, valid, schedule, method: str, fused: Optional[bool]):
    """The dual a, fused by torch.compile on CUDA (a few kernels instead of one launch per op).

    Inputs are detached: the solve needs no graph (backward is implicit), and a requires_grad flag
    would make a separate compiled version of it.
    """
    solver = METHODS[_checks.one_of("method", method, METHODS)]
    # by default only the iterative loop is compiled: on an H200 the one-sort exact solve was
    # faster eager (1.67 ms) than compiled (1.95 ms) for three 32k rows
    use_fused = (s.is_cuda and method == "iterative") if fused is None else fused
    if use_fused and not torch.compiler.is_compiling():
        if method not in _compiled:
            # shapes become dynamic after the first change, so new lengths do not recompile
            _compiled[method] = torch.compile(solver, dynamic=None)
        return _compiled[method](s.detach(), log_k.detach(), valid, tuple(schedule))
    return solver(s, log_k, valid, schedule)


def _schedule_for(method: str, n_iters: int, eps: float, eps_init, eps_decay) -> tuple:
    """ε per iteration; the exact solve needs only the final ε, which is always `eps`."""
    schedule = eps_schedule(n_iters, eps, eps_init, eps_decay)
    return (float(eps),) if _checks.one_of("method", method, METHODS) == "exact" else schedule


def coor_descent_dual(s: Tensor, *, k: K, n_iters: int = 20, eps: float = 0.03,
                      eps_init: Optional[float] = 4.0, eps_decay: float = 0.7,
                      mask: Optional[Tensor] = None, method: str = "exact",
                      fused: Optional[bool] = None) -> Tensor:
    """The dual variable a (..., 1) of coordinate descent: weights are min(1, exp((s + a)/ε)).

    Exposed for routing that must be causal: a computed on earlier tokens thresholds later ones.
    """
    s, valid, kk, shift = _prepare(s, k, mask)
    return dual_per_row(s, kk, valid, n_iters=n_iters, eps=eps, eps_init=eps_init, eps_decay=eps_decay,
                        method=method, fused=fused) - shift  # -inf for rows with nothing to route


def dual_per_row(s: Tensor, k: Tensor, valid: Tensor, *, n_iters: int, eps: float, eps_init: Optional[float],
                 eps_decay: float, method: str, fused: Optional[bool]) -> Tensor:
    """coor_descent_dual for float32 s (..., n), a bool mask and a real budget per row, k
    broadcastable to (..., 1) (not checked: for callers that computed it)."""
    s, shift = _shifted(s, valid)
    schedule = _schedule_for(method, n_iters, eps, eps_init, eps_decay)
    k = torch.minimum(k, valid.sum(-1, keepdim=True).float())
    with torch.no_grad():
        a = _solve_dual(s, torch.log(k.clamp_min(1e-30)).expand(*s.shape[:-1], 1), valid, schedule,
                        method, fused)
    # a row with nothing to route (no valid token, or k = 0) gets a = -inf: no token passes it
    empty = (valid.sum(-1, keepdim=True) == 0) | (k <= 0)
    return torch.where(empty, float("-inf"), a - shift)


class _CoorDescent(torch.autograd.Function):
    """Forward solves for the dual without a graph; backward is implicit differentiation of the
    fixed point λ = min(1, exp((s + a)/ε)) with Σλ = k, so memory is O(n) whatever n_iters is."""

    @staticmethod
    def forward(ctx, s, k, valid, schedule, method, fused):
        eps = schedule[-1]
        log_k = torch.log(k.clamp_min(1e-30)).expand(*s.shape[:-1], 1)
        a = _solve_dual(s, log_k, valid, schedule, method, fused)
        weights = torch.exp(torch.clamp(s + a, max=0.0) / eps)
        n_valid = valid.sum(-1, keepdim=True)
        saturated = k >= n_valid  # every valid position carries weight 1
        weights = torch.where(saturated, 1.0, weights)
        weights = torch.where(valid & (k > 0), weights, 0.0)
        weights = torch.nan_to_num(weights, nan=0.0)
        free = valid & ~saturated & (s + a < 0)
        ctx.save_for_backward(weights, free)
        ctx.eps = eps
        return weights

    @staticmethod
    def backward(ctx, grad):
        weights, free = ctx.saved_tensors
        lam = torch.where(free, weights, 0.0)
        total = lam.sum(-1, keepdim=True)
        mean_grad = (lam * grad).sum(-1, keepdim=True) / total.clamp_min(1e-30)
        grad_s = lam / ctx.eps * (grad - mean_grad)
        return grad_s, None, None, None, None, None


def coor_descent(s: Tensor, *, k: K, n_iters: int, eps: float = 0.1, eps_init: Optional[float] = None,
                 eps_decay: float = 1.0, mask: Optional[Tensor] = None, method: str = "exact",
                 fused: Optional[bool] = None) -> Tensor:
    """Coordinate-descent soft top-k (Qian et al. 2022, eq. 5): the maximiser of s.λ + εH(λ) with
    Σλ = k, 0 ≤ λ ≤ 1, i.e. λ = min(1, exp((s + a)/ε)).

    Returns weights in [0, 1] of the shape of s that sum to k over the unmasked positions of each
    row. method='exact' (default) solves the descent's fixed point directly (one sort: Σλ = k to
    float precision whatever the scores); method='iterative' runs the ε-scaled descent, n_iters
    steps from eps_init down by eps_decay to eps (give a schedule at small ε, e.g. eps_init=4,
    eps_decay=0.7). Both backpropagate by implicit differentiation, O(n) memory. `fused=None`
    compiles the solver on CUDA and runs it eagerly elsewhere. eps defaults to colt5-attention's 0.1.
    """
    schedule = _schedule_for(method, n_iters, eps, eps_init, eps_decay)
    s, valid, k, _ = _prepare(s, k, mask)
    return _CoorDescent.apply(s, k, valid, schedule, _checks.one_of("method", method, METHODS), fused)


def sinkhorn_topk(s: Tensor, *, k: K, n_iters: int = 30, eps: float = 0.05,
                  mask: Optional[Tensor] = None) -> Tensor:
    """Optimal-transport soft top-k (Xie et al. 2020): entropic OT of the n scores, min-max
    normalised, to two anchors {0, 1} receiving mass (n-k)/n and k/n; Sinkhorn on an n×2 plan.

    Weights are n·Γ[:, 1]. All iterations but the last run without a graph, and the gradient
    flows through the last one, so memory is O(n).
    """
    _checks.positive_int("n_iters", n_iters)
    _checks.positive_number("eps", eps)
    s, valid, k, _ = _prepare(s, k, mask)
    n_valid = valid.sum(-1, keepdim=True).float().clamp_min(1.0)
    lo = torch.where(valid, s, float("inf")).amin(-1, keepdim=True).detach()
    hi = torch.where(valid, s, float("-inf")).amax(-1, keepdim=True).detach()
    z = (s - lo) / (hi - lo).clamp_min(1e-6)
    z = torch.where(valid, z, 0.0)
    cost = torch.stack(((z - 0.0) ** 2, (z - 1.0) ** 2), dim=-1)  # (..., n, 2)
    log_mu = torch.where(valid, -torch.log(n_valid), float("-inf")).unsqueeze(-1)  # (..., n, 1)
    top = (k / n_valid).clamp(1e-12, 1 - 1e-12)
    log_nu = torch.cat((torch.log1p(-top), torch.log(top)), dim=-1).unsqueeze(-2)  # (..., 1, 2)

    def update_f(g, c):
        return eps * log_mu - eps * torch.logsumexp((g - c) / eps, dim=-1, keepdim=True)

    with torch.no_grad():
        c0 = cost.detach()
        g = torch.zeros_like(log_nu)
        for _ in range(n_iters - 1):
            f = torch.where(valid.unsqueeze(-1), update_f(g, c0), float("-inf"))
            g = eps * log_nu - eps * torch.logsumexp((f - c0) / eps, dim=-2, keepdim=True)
    f = update_f(g, cost)
    weights = n_valid * torch.exp((f + g - cost) / eps)[..., 1]
    saturated = k >= n_valid
    weights = torch.where(saturated, 1.0 + 0.0 * weights, weights)
    weights = torch.where(valid & (k > 0), weights, 0.0)
    return weights.clamp(0.0, 1.0)


def cum_softmax_topk(s: Tensor, *, k: K, mask: Optional[Tensor] = None) -> Tensor:
    """Cumulative softmax over scores sorted high to low: λ_j = exp(s_j) / Σ_{i≤j} exp(s_i),
    kept for the k highest, 0 elsewhere. Weights lie in [0, 1] (the top token gets 1)."""
    s, valid, k, _ = _prepare(s, k, mask)
    masked = torch.where(valid, s, float("-inf"))
    sorted_s, order = masked.sort(dim=-1, descending=True)
    safe = torch.where(torch.isfinite(sorted_s), sorted_s, 0.0)
    log_norm = torch.logcumsumexp(torch.where(torch.isfinite(sorted_s), sorted_s, float("-inf")), dim=-1)
    sorted_w = torch.exp(safe - torch.where(torch.isfinite(log_norm), log_norm, 0.0))
    sorted_w = torch.where(k >= valid.sum(-1, keepdim=True), 1.0, sorted_w)  # all routed: weight 1, as the others
    rank = torch.arange(s.shape[-1], device=s.device)
    keep = (rank < k) & torch.isfinite(sorted_s)
    sorted_w = torch.where(keep, sorted_w, 0.0)
    return torch.zeros_like(s).scatter(-1, order, sorted_w)


def ideal_num_selected(k: K, over_fetch: float) -> K:
    """How many tokens carry weight: ⌈k·over_fetch⌉ (the paper's 9/8 during training)."""
    if isinstance(k, Tensor):  # in float64, clamped: a huge per-sample k must not overflow to negative
        return torch.ceil(k.double() * over_fetch).clamp_max(2 ** 62).long()
    return int(math.ceil(k * over_fetch))
