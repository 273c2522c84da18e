"""Soft top-k solvers: each one against a brute-force float64 reference, plus the properties
every router relies on (weights in [0, 1], Σ ≈ k, masks, per-sample k, float32 math, O(n)
backward)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from colt5_lightning.routing import coor_descent, coor_descent_dual, cum_softmax_topk, sinkhorn_topk

DEFAULT_CD = dict(n_iters=20, eps=0.03, eps_init=4.0, eps_decay=0.7)  # the routers' defaults
SOLVERS = {
    "coor_descent": lambda s, k, mask=None: coor_descent(s, k=k, mask=mask, **DEFAULT_CD),
    "sinkhorn": lambda s, k, mask=None: sinkhorn_topk(s, k=k, mask=mask),
    "cum_softmax": lambda s, k, mask=None: cum_softmax_topk(s, k=k, mask=mask),
}


# ---------------------------------------------------------------- brute-force references (float64)

def entropic_lp_optimum(s: torch.Tensor, k: float, eps: float) -> torch.Tensor:
    """argmax s·λ + ε H(λ), H = −Σ λ log λ, s.t. Σλ = k, 0 ≤ λ ≤ 1 (one row).

    KKT gives λ_i = min(1, exp((s_i + a)/ε)); Σλ is increasing in a, so a is found by bisection
    to 1e-10 in float64.
    """
    s = s.double()
    n = s.numel()
    if k >= n:
        return torch.ones_like(s)

    def total(a):
        return torch.exp(torch.clamp((s + a) / eps, max=0.0)).sum().item()

    lo = -s.max().item() + eps * math.log(k / n) - 1.0  # every λ < k/n: total < k
    hi = -s.min().item()                                # every λ = 1: total = n ≥ k
    while hi - lo > 1e-10:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if total(mid) < k else (lo, mid)
    return torch.exp(torch.clamp((s + 0.5 * (lo + hi)) / eps, max=0.0))


def sinkhorn_plan_reference(s: torch.Tensor, k: int, eps: float, max_iters: int = 20000) -> torch.Tensor:
    """n·Γ[:, 1] of the entropic OT plan Γ (n×2, explicit) from n uniform scores to anchors {0, 1}
    with masses (n−k)/n and k/n, cost (z − anchor)² on min-max normalised scores; Sinkhorn in
    float64 until both marginals hold to 1e-12."""
    s = s.double()
    n = s.numel()
    z = (s - s.min()) / (s.max() - s.min())
    cost = torch.stack(((z - 0.0) ** 2, (z - 1.0) ** 2), dim=-1)
    log_mu = torch.full((n, 1), -math.log(n), dtype=torch.float64)
    log_nu = torch.tensor([[math.log((n - k) / n), math.log(k / n)]], dtype=torch.float64)
    g = torch.zeros(1, 2, dtype=torch.float64)
    for it in range(max_iters):
        f = eps * log_mu - eps * torch.logsumexp((g - cost) / eps, dim=1, keepdim=True)
        g = eps * log_nu - eps * torch.logsumexp((f - cost) / eps, dim=0, keepdim=True)
        if it % 20 == 0:
            f = eps * log_mu - eps * torch.logsumexp((g - cost) / eps, dim=1, keepdim=True)
            plan = torch.exp((f + g - cost) / eps)
            if (plan.sum(0) - torch.exp(log_nu[0])).abs().max() < 1e-12:
                return n * plan[:, 1]
    raise AssertionError("reference Sinkhorn did not converge")


def cum_softmax_reference(s: torch.Tensor, k: int) -> torch.Tensor:
    """A direct loop over the scores sorted high to low: λ_j = exp(s_j) / Σ_{i≤j} exp(s_i)."""
    s = s.double()
    out = torch.zeros_like(s)
    running = 0.0
    for rank, i in enumerate(torch.argsort(s, descending=True).tolist()):
        running += math.exp(s[i].item())
        if rank < k:
            out[i] = math.exp(s[i].item()) / running
    return out


def row_scores(seed: int, rows: int, n: int, scale: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, n, generator=g) * scale


# ---------------------------------------------------------------- coordinate descent


@pytest.mark.parametrize("method", ["exact", "iterative"])
@pytest.mark.parametrize("n,k", [(8, 1), (16, 4), (64, 8), (100, 99), (512, 64)])
@pytest.mark.parametrize("scale", [0.01, 1.0, 10.0])
def test_coor_descent_default_schedule_matches_entropic_lp_optimum(n, k, scale, method):
    s = torch.randn(n) * scale
    expected = entropic_lp_optimum(s, k, eps=0.03)
    got = coor_descent(s, k=k, method=method, **DEFAULT_CD)
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=0)


def test_iterative_coor_descent_reaches_the_exact_fixed_point_at_4k():
    s = torch.randn(3, 4096) * 3
    exact = coor_descent(s, k=128, method="exact", **DEFAULT_CD)
    iterative = coor_descent(s, k=128, method="iterative", **DEFAULT_CD)
    torch.testing.assert_close(iterative, exact, atol=1e-4, rtol=0)


def test_unknown_coor_descent_method_is_named():
    with pytest.raises(ValueError, match="method"):
        coor_descent(torch.randn(8), k=2, n_iters=5, eps=0.1, method="newton")


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0])
def test_coor_descent_fixed_eps_matches_entropic_lp_optimum(eps):
    s = torch.randn(200)
    got = coor_descent(s, k=20, n_iters=50, eps=eps)
    torch.testing.assert_close(got.double(), entropic_lp_optimum(s, 20, eps), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [16, 64, 512])
@pytest.mark.parametrize("k_fraction", [1 / 16, 1 / 8, 1 / 2, 15 / 16])
def test_coor_descent_separated_scores_select_exactly_the_topk(n, k_fraction):
    k = max(1, int(n * k_fraction))
    s = torch.randperm(n).float() * 10
    w = coor_descent(s, k=k, **DEFAULT_CD)
    assert set((w > 0.5).nonzero().flatten().tolist()) == set(s.topk(k).indices.tolist())
    torch.testing.assert_close(w.sum(), torch.tensor(float(k)), rtol=1e-3, atol=0)


def test_coor_descent_dual_gives_the_weights():
    s = torch.randn(3, 50)
    a = coor_descent_dual(s, k=7, **DEFAULT_CD)
    assert a.shape == (3, 1)
    torch.testing.assert_close(torch.exp(torch.clamp(s + a, max=0) / 0.03), coor_descent(s, k=7, **DEFAULT_CD))


def test_coor_descent_gradient_matches_finite_differences():
    s = torch.randn(12)
    kwargs = dict(k=4, n_iters=200, eps=0.5)
    a = coor_descent_dual(s, **kwargs)
    h = 1e-3
    assert ((s + a).abs() > 20 * h).all(), "no score may sit on the saturation kink"
    jac = torch.autograd.functional.jacobian(lambda t: coor_descent(t, **kwargs), s)
    fd = torch.stack([(coor_descent(s + h * e, **kwargs) - coor_descent(s - h * e, **kwargs)) / (2 * h)
                      for e in torch.eye(12)], dim=1)
    assert jac.abs().max() > 0.1  # not vacuous
    torch.testing.assert_close(jac, fd, atol=1e-2 * jac.abs().max().item(), rtol=0)


def test_coor_descent_gradient_matches_the_closed_form_in_float64():
    """The implicit gradient equals central differences of the bisection solution (float64)."""
    s = torch.randn(10, dtype=torch.float64)
    eps, k, h = 0.5, 3, 1e-6
    jac = torch.autograd.functional.jacobian(lambda t: coor_descent(t, k=k, n_iters=100, eps=eps), s)
    fd = torch.stack([(entropic_lp_optimum(s + h * e, k, eps) - entropic_lp_optimum(s - h * e, k, eps)) / (2 * h)
                      for e in torch.eye(10, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(jac.double(), fd, atol=2e-4, rtol=0)


def test_coor_descent_gradient_is_zero_on_masked_positions():
    s = torch.randn(2, 20, requires_grad=True)
    mask = torch.rand(2, 20) > 0.3
    (coor_descent(s, k=5, mask=mask, **DEFAULT_CD) * torch.randn(2, 20)).sum().backward()
    assert torch.isfinite(s.grad).all()
    assert (s.grad[~mask] == 0).all()


def _saved_tensor_bytes(fn):
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sizes


@pytest.mark.parametrize("solver", ["coor_descent", "sinkhorn"])
def test_backward_memory_does_not_grow_with_iterations(solver):
    s = torch.randn(4, 256, requires_grad=True)
    run = {"coor_descent": lambda it: coor_descent(s, k=16, n_iters=it, eps=0.1),
           "sinkhorn": lambda it: sinkhorn_topk(s, k=16, n_iters=it)}[solver]
    few, many = _saved_tensor_bytes(lambda: run(5)), _saved_tensor_bytes(lambda: run(50))
    assert few == many
    assert sum(many) <= 40 * s.numel() * 4  # a handful of (b, n) tensors, never (iters, b, n)


# ---------------------------------------------------------------- sinkhorn


@pytest.mark.parametrize("n,k", [(16, 4), (33, 10), (64, 8), (512, 64)])
def test_sinkhorn_matches_float64_plan_when_iterated_to_convergence(n, k):
    s = torch.randn(n)
    w = sinkhorn_topk(s, k=k, n_iters=300)
    torch.testing.assert_close(w.double(), sinkhorn_plan_reference(s, k, eps=0.05), atol=1e-5, rtol=0)
    torch.testing.assert_close(w.sum(), torch.tensor(float(k)), rtol=1e-3, atol=0)


@pytest.mark.parametrize("n,k", [(16, 4), (64, 8), (512, 64)])
def test_sinkhorn_default_iterations_are_close_to_the_converged_plan(n, k):
    """30 iterations (the default) leave Sinkhorn short of convergence on small n: loose bound."""
    s = torch.randn(n)
    torch.testing.assert_close(sinkhorn_topk(s, k=k).double(), sinkhorn_plan_reference(s, k, eps=0.05),
                               atol=0.05, rtol=0)


@pytest.mark.parametrize("k", [1, 4, 8])
def test_sinkhorn_small_eps_separated_scores_select_exactly_the_topk(k):
    s = torch.randperm(16).float() * 10
    w = sinkhorn_topk(s, k=k, eps=0.01, n_iters=300)
    assert set((w > 0.5).nonzero().flatten().tolist()) == set(s.topk(k).indices.tolist())


# ---------------------------------------------------------------- cumulative softmax


@pytest.mark.parametrize("n,k", [(2, 1), (10, 3), (64, 8), (100, 99)])
def test_cum_softmax_matches_a_direct_loop(n, k):
    s = torch.randn(n) * 3
    torch.testing.assert_close(cum_softmax_topk(s, k=k).double(), cum_softmax_reference(s, k), atol=1e-6, rtol=0)


def test_cum_softmax_keeps_exactly_the_k_highest():
    s = torch.randn(4, 40)
    w = cum_softmax_topk(s, k=6)
    assert ((w > 0).sum(-1) == 6).all()
    assert torch.equal((w > 0), torch.zeros_like(w, dtype=torch.bool).scatter(-1, s.topk(6).indices, True))


# ---------------------------------------------------------------- properties of every solver

scales = st.sampled_from([0.0, 1e-3, 0.1, 1.0, 10.0, 100.0])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 300), k_frac=st.floats(0.0, 1.0), scale=scales,
       masked=st.booleans(), solver=st.sampled_from(sorted(SOLVERS)))
def test_weights_lie_in_unit_interval_sum_to_k_and_ignore_masked(seed, n, k_frac, scale, masked, solver):
    s = row_scores(seed, 2, n, scale)
    k = max(1, round(k_frac * n))
    mask = (torch.rand(2, n, generator=torch.Generator().manual_seed(seed + 1)) > 0.3) if masked else None
    valid = torch.ones(2, n, dtype=torch.bool) if mask is None else mask
    w = SOLVERS[solver](s, k, mask)
    assert w.dtype == torch.float32 and w.shape == s.shape
    assert ((w >= 0) & (w <= 1)).all()
    assert (w[~valid] == 0).all()
    expected = torch.clamp(valid.sum(-1).float(), max=k)
    if solver == "coor_descent":
        torch.testing.assert_close(w.sum(-1), expected, rtol=1e-3, atol=1e-4)
    elif solver == "sinkhorn":  # 30 iterations (the default) are loose at small n: see the plan tests
        torch.testing.assert_close(w.sum(-1), expected, rtol=0.15, atol=1e-4)
    else:
        assert ((w > 0).sum(-1) <= expected).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 200), k=st.floats(0.05, 1.0))
def test_coordinate_descent_meets_a_fractional_budget(seed, n, k):
    s = row_scores(seed, 2, n, 1.0)
    budget = k * n
    w = coor_descent(s, k=budget, n_iters=20, eps=0.03)
    torch.testing.assert_close(w.sum(-1), torch.full((2,), budget), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_per_sample_k_is_honoured_row_by_row(solver):
    s = torch.randn(4, 30)
    mask = torch.ones(4, 30, dtype=torch.bool)
    mask[3, 10:] = False  # 10 valid tokens, asked for 12
    k = torch.tensor([1, 5, 30, 12])
    w = SOLVERS[solver](s, k, mask)
    expected = torch.tensor([1.0, 5.0, 30.0, 10.0])  # min(k_b, valid tokens of row b)
    if solver == "cum_softmax":  # exactly k_b tokens carry weight
        assert torch.equal((w > 0).sum(-1).float(), expected)
    else:  # Sinkhorn's default 30 iterations leave its sums ~1% off on short rows
        rtol = {"coor_descent": 1e-3, "sinkhorn": 3e-2}[solver]
        torch.testing.assert_close(w.sum(-1), expected, rtol=rtol, atol=1e-4)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_k_at_least_the_valid_count_gives_every_valid_token_weight_one(solver):
    s = torch.randn(2, 6)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    w = SOLVERS[solver](s, 8, mask)
    torch.testing.assert_close(w, mask.float())


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_zero_k_for_a_sample_gives_it_no_weight(solver):
    w = SOLVERS[solver](torch.randn(2, 10), torch.tensor([0, 3]))
    assert (w[0] == 0).all() and (w[1] > 0).any()


@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_solvers_compute_in_float32_whatever_the_input_dtype(solver, dtype):
    s = torch.randn(2, 64)
    w = SOLVERS[solver](s.to(dtype), 8)
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, SOLVERS[solver](s.to(dtype).float(), 8))


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_solvers_compute_in_float32_under_autocast(solver):
    s = torch.randn(2, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = SOLVERS[solver](s, 8)
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, SOLVERS[solver](s, 8))
    (w * torch.randn_like(w)).sum().backward()
    assert s.grad.dtype == torch.float32 and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_gradients_are_finite_with_masks(solver):
    s = torch.randn(3, 40, requires_grad=True)
    mask = torch.rand(3, 40) > 0.5
    mask[2] = False  # a fully padded row
    (SOLVERS[solver](s, 6, mask) * torch.randn(3, 40)).sum().backward()
    assert torch.isfinite(s.grad).all()


# ---------------------------------------------------------------- invariants (every solver)

@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 200), k_frac=st.floats(0.05, 1.0),
       offset=st.sampled_from([-1e6, -100.0, 3.0, 1e4, 1e6]), solver=st.sampled_from(sorted(SOLVERS)))
def test_weights_do_not_change_when_a_constant_is_added_to_a_row(seed, n, k_frac, offset, solver):
    s = row_scores(seed, 2, n, 1.0)
    k = max(1, round(k_frac * n))
    base = SOLVERS[solver](s, k)
    # the shifted scores must be representable: compare against the float32-rounded shift
    shifted = SOLVERS[solver]((s.double() + offset).float(), k)
    exact = SOLVERS[solver](((s.double() + offset).float().double() - offset).float(), k)
    torch.testing.assert_close(shifted, exact, atol=1e-4, rtol=0)
    if abs(offset) <= 100:
        torch.testing.assert_close(shifted, base, atol=1e-4, rtol=0)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 100), k_frac=st.floats(0.05, 1.0),
       masked=st.booleans(), solver=st.sampled_from(sorted(SOLVERS)))
def test_permuting_the_scores_permutes_the_weights(seed, n, k_frac, masked, solver):
    s = row_scores(seed, 2, n, 1.0)
    k = max(1, round(k_frac * n))
    mask = (torch.rand(2, n, generator=torch.Generator().manual_seed(seed + 1)) > 0.3) if masked else None
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 2))
    w = SOLVERS[solver](s, k, mask)
    w_perm = SOLVERS[solver](s[:, perm], k, None if mask is None else mask[:, perm])
    torch.testing.assert_close(w_perm, w[:, perm], atol=1e-5, rtol=0)


def test_coordinate_descent_meets_its_budget_far_from_zero():
    """At +1e8 float32 rounds all 64 scores to one value: a tie, so each gets k/n."""
    for offset in (1e6, 1e8):
        w = coor_descent(torch.randn(2, 64) + offset, k=8, n_iters=20, eps=0.03)
        torch.testing.assert_close(w.sum(-1), torch.full((2,), 8.0), atol=1e-3, rtol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_non_finite_scores_are_an_error(solver, bad):
    s = torch.randn(2, 16)
    s[1, 3] = bad
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        SOLVERS[solver](s, 4)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_non_finite_scores_under_the_mask_are_ignored(solver):
    s = torch.randn(2, 16)
    s[1, 3] = float("nan")
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 3] = False
    w = SOLVERS[solver](s, 4, mask)
    assert torch.isfinite(w).all() and w[1, 3] == 0
