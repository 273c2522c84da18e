"""The Router module (scores → soft top-k → selected slots) and the causal routers."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from colt5_lightning.routing import ROUTER_TYPES, Router, Routing
from colt5_lightning.routing.causal import (CausalRouter, first_come_within, running_capacity, to_segments,
                                            window_duals, windows_before)
from colt5_lightning.routing.soft_topk import dual_per_row

DIM = 32


@pytest.fixture(params=ROUTER_TYPES)
def router_type(request):
    return request.param


def padded_mask(n, valid_counts):
    """(b, n) bool: the first valid_counts[b] tokens of each row are real, the rest padding."""
    return torch.arange(n).unsqueeze(0) < torch.tensor(valid_counts).unsqueeze(1)


def routed_positions(routing: Routing, n: int) -> torch.Tensor:
    """(b, r, n) count of valid routed slots per sequence position."""
    counts = torch.zeros(*routing.indices.shape[:2], n, dtype=torch.long)
    return counts.scatter_add(-1, routing.indices, routing.routed_mask.long())


# ---------------------------------------------------------------- which tokens are selected


@pytest.mark.parametrize("training", [False, True])
def test_masked_tokens_are_never_selected(router_type, training):
    router = Router(DIM, router_type=router_type).train(training)
    x = torch.randn(3, 40, DIM)
    mask = torch.rand(3, 40) > 0.5
    routing = router(x, num_tokens=12, mask=mask)
    assert mask.gather(1, routing.indices[:, 0])[routing.routed_mask[:, 0]].all()
    assert (routing.all_weights[:, 0][~mask] == 0).all()
    assert (routing.weights[~routing.routed_mask] == 0).all()
    assert routed_positions(routing, 40).max() <= 1  # no token routed twice


def test_routed_tokens_are_the_highest_scoring(router_type):
    router = Router(DIM, router_type=router_type).eval()
    x = torch.randn(2, 50, DIM)
    routing = router(x, num_tokens=10)
    for b in range(2):
        assert set(routing.indices[b, 0].tolist()) == set(routing.scores[b, 0].topk(10).indices.tolist())
    torch.testing.assert_close(routing.tokens[:, 0], x.gather(1, routing.indices[:, 0, :, None].expand(-1, -1, DIM)))


def test_eval_routes_min_of_k_and_valid_count(router_type):
    router = Router(DIM, router_type=router_type).eval()
    mask = padded_mask(30, [30, 20, 5])
    routing = router(torch.randn(3, 30, DIM), num_tokens=8, mask=mask)
    assert routing.routed_mask.sum(-1).flatten().tolist() == [8, 8, 5]


def test_per_sample_k_is_honoured(router_type):
    """A (batch,) tensor of counts: each row routes exactly min(k_b, n_valid) slots in eval mode,
    and its soft top-k weights sum to that count."""
    router = Router(DIM, router_type=router_type).eval()
    mask = padded_mask(30, [30, 30, 6, 30])
    k = torch.tensor([1, 7, 9, 30])
    routing = router(torch.randn(4, 30, DIM), num_tokens=k, mask=mask)
    expected = torch.tensor([1, 7, 6, 30])
    assert torch.equal(routing.routed_mask.sum(-1).flatten(), expected)
    if router_type != "cum_softmax":  # cumulative softmax weights do not sum to k
        # Sinkhorn's default 30 iterations leave its sums ~1% off on short rows (see test_soft_topk)
        rtol = {"coor_descent": 1e-3, "sinkhorn": 3e-2}[router_type]
        torch.testing.assert_close(routing.all_weights.sum(-1).flatten(), expected.float(), rtol=rtol, atol=1e-3)


@pytest.mark.parametrize("k", [1, 8, 16, torch.tensor([3, 16])])
def test_training_over_fetches_nine_eighths_of_k(router_type, k):
    router = Router(DIM, router_type=router_type).train()
    routing = router(torch.randn(2, 64, DIM), num_tokens=k)
    ks = k.tolist() if isinstance(k, torch.Tensor) else [k, k]
    assert routing.routed_mask.sum(-1).flatten().tolist() == [math.ceil(9 * kb / 8) for kb in ks]
    assert router.eval()(torch.randn(2, 64, DIM), num_tokens=k).routed_mask.sum(-1).flatten().tolist() == ks


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 80), k=st.integers(1, 100), training=st.booleans(),
       router_type=st.sampled_from(ROUTER_TYPES), straight_through=st.booleans(), routes=st.integers(1, 3))
def test_routing_invariants(seed, n, k, training, router_type, straight_through, routes):
    g = torch.Generator().manual_seed(seed)
    router = Router(DIM, router_type=router_type, straight_through=straight_through,
                    num_routing_tokens=routes).train(training)
    x = torch.randn(2, n, DIM, generator=g)
    mask = torch.rand(2, n, generator=g) > 0.3
    routing = router(x, num_tokens=k, mask=mask)
    n_valid = mask.sum(-1, keepdim=True)
    selected = math.ceil(k * 9 / 8) if training else k
    assert routing.indices.shape[:2] == (2, routes) and routing.indices.shape[-1] == max(1, min(n, selected))
    assert torch.equal(routing.routed_mask.sum(-1), torch.clamp(n_valid, max=selected).expand(2, routes))
    assert mask.unsqueeze(1).expand(2, routes, n).gather(-1, routing.indices)[routing.routed_mask].all()
    assert ((routing.weights >= 0) & (routing.weights <= 1)).all()
    assert (routing.weights[~routing.routed_mask] == 0).all()
    assert routing.weights.dtype == torch.float32 and routing.scores.dtype == torch.float32


# ---------------------------------------------------------------- n ≤ k


@pytest.mark.parametrize("training", [False, True])
def test_sequence_shorter_than_k_routes_every_valid_token_with_weight_one(router_type, training):
    router = Router(DIM, router_type=router_type).train(training)
    x = torch.randn(2, 6, DIM, requires_grad=True)
    mask = padded_mask(6, [6, 4])
    routing = router(x, num_tokens=8, mask=mask)
    assert torch.equal(routed_positions(routing, 6)[:, 0] > 0, mask)
    torch.testing.assert_close(routing.weights, routing.routed_mask.float())
    (routing.weights.unsqueeze(-1) * routing.tokens).sum().backward()
    assert router.routing_tokens.grad is not None and torch.isfinite(router.routing_tokens.grad).all()
    assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- weights and gradients


def test_gradient_reaches_the_routing_tokens(router_type):
    router = Router(DIM, router_type=router_type, num_routing_tokens=2)
    routing = router(torch.randn(2, 40, DIM), num_tokens=8)
    (routing.weights.unsqueeze(-1) * routing.tokens).pow(2).sum().backward()
    grad = router.routing_tokens.grad
    assert torch.isfinite(grad).all() and (grad.abs().sum(-1) > 0).all()


def test_straight_through_weighs_one_forward_and_passes_the_soft_gradient(router_type):
    router = Router(DIM, router_type=router_type, straight_through=True).eval()
    routing = router(torch.randn(2, 40, DIM), num_tokens=8)
    torch.testing.assert_close(routing.weights, routing.routed_mask.float())
    (routing.weights * torch.randn_like(routing.weights)).sum().backward()
    assert router.routing_tokens.grad.abs().sum() > 0


def test_scores_and_weights_are_float32_under_autocast(router_type):
    router = Router(DIM, router_type=router_type)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        routing = router(torch.randn(2, 40, DIM).bfloat16(), num_tokens=8)
    assert routing.scores.dtype == routing.weights.dtype == routing.all_weights.dtype == torch.float32


def test_scatter_adds_weighted_values_at_the_routed_positions():
    router = Router(DIM).eval()
    routing = router(torch.randn(2, 20, DIM), num_tokens=5)
    values = torch.randn(2, 1, 5, DIM)
    out = Router.scatter(routing, values, torch.zeros(2, 20, DIM))
    for b in range(2):
        for slot in range(5):
            i = routing.indices[b, 0, slot]
            torch.testing.assert_close(out[b, i], values[b, 0, slot] * routing.weights[b, 0, slot])
    assert (out.abs().sum(-1) > 0).sum() == 10


# ---------------------------------------------------------------- causal routing

SEG = 8


def causal_router(training=False, straight_through=False, **kw):
    return CausalRouter(DIM, segment_size=SEG, straight_through=straight_through, **kw).train(training)


def filler_and_direction(router, b, n):
    """Inputs whose scores are 0 along the router's routing token, and that token's unit direction."""
    direction = router.routing_tokens.detach()[0] / router.routing_tokens.detach()[0].norm()
    x = torch.randn(b, n, DIM)
    return x - (x @ direction).unsqueeze(-1) * direction, direction


@pytest.mark.parametrize("training", [False, True])
def test_causal_router_first_segment_routes_nothing_and_the_rest_stays_within_the_running_capacity(training):
    router = causal_router(training)
    n, k = 48, 12
    routing = router(torch.randn(2, n, DIM), num_tokens=k)
    routed = routed_positions(routing, n)[:, 0]
    m = router.num_slots(k, n)
    capacity = running_capacity(n, n, m, math.ceil(router.burst * m), "cpu")
    assert (routed[:, :SEG] == 0).all()
    assert (routed.cumsum(-1) <= capacity).all()
    assert routed[:, SEG:].sum() > 0


def test_causal_router_routes_a_burst_of_important_tokens_all_at_once():
    """The point of routing: six adjacent tokens that score far above the rest are all routed,
    though a fixed per-segment share (⌈k·L/n⌉ = 2 here) would admit only two of them."""
    router = causal_router()
    n, k = 48, 12
    x, direction = filler_and_direction(router, 2, n)  # filler scores 0: none of it beats its window's threshold
    burst = torch.arange(26, 32)  # inside one segment, after two filler segments
    x[:, burst] += 5 * direction
    routed = routed_positions(router(x, num_tokens=k), n)[:, 0]
    assert (routed[:, burst] == 1).all()


@pytest.mark.parametrize("training", [False, True])
def test_causal_router_routes_a_burst_at_the_end_of_a_long_sequence(training):
    """The reserve for bursts is not used up by ordinary tokens earlier on: the threshold admits
    them at the capacity's steady rate. A decoder's answer positions come last."""
    router = causal_router(training)
    n, k = 1024, 32
    x = torch.randn(4, n, DIM)
    direction = router.routing_tokens.detach()[0] / router.routing_tokens.detach()[0].norm()
    burst = torch.arange(1000, 1006)
    x[:, burst] += 8 * direction
    routed = routed_positions(router(x, num_tokens=k), n)[:, 0]
    assert (routed[:, burst] == 1).all()


@pytest.mark.parametrize("training", [False, True])
def test_causal_router_admits_ordinary_tokens_at_about_the_steady_rate(training):
    router = causal_router(training)
    n, k = 1024, 32
    routing = router(torch.randn(8, n, DIM), num_tokens=k)
    m = router.num_slots(k, n)
    steady = m - math.ceil(router.burst * m)
    per_row = routing.routed_mask[:, 0].sum(-1).float()
    assert 0.5 * steady <= per_row.mean() <= steady + 0.5 * (m - steady)


@pytest.mark.parametrize("training", [False, True])
def test_a_key_value_router_routes_the_first_segment_by_its_own_threshold(training):
    n, k = 48, 12
    query_router, kv_router = causal_router(training), causal_router(training, route_first_segment=True)
    kv_router.load_state_dict(query_router.state_dict())
    x, direction = filler_and_direction(kv_router, 2, n)
    x[:, 3] += 5 * direction
    assert (routed_positions(kv_router(x, num_tokens=k), n)[:, 0, 3] == 1).all()
    assert (routed_positions(query_router(x, num_tokens=k), n)[:, 0, :SEG] == 0).all()


@given(eligible=st.lists(st.booleans(), min_size=1, max_size=40), slots=st.integers(1, 12),
       burst_frac=st.floats(0, 1))
@settings(max_examples=60, deadline=None)
def test_first_come_within_equals_the_sequential_greedy_rule(eligible, slots, burst_frac):
    n = len(eligible)
    capacity = running_capacity(n, n, slots, math.ceil(burst_frac * slots), "cpu")
    expected, count = [], 0
    for t, e in enumerate(eligible):
        take = e and count < capacity[t]
        count += take
        expected.append(take)
    assert first_come_within(torch.tensor(eligible), capacity).tolist() == expected


def test_causal_router_with_several_routing_tokens_routes_each_set_on_its_own():
    router = CausalRouter(DIM, segment_size=SEG, num_routing_tokens=3).eval()
    routing = router(torch.randn(2, 48, DIM), num_tokens=12)
    assert routing.indices.shape == (2, 3, 12) and routing.scores.shape == (2, 3, 48)
    assert not torch.equal(routing.indices[:, 0], routing.indices[:, 1])


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("t", [3, 8, 20, 39])
def test_causal_router_decisions_up_to_t_ignore_tokens_after_t(training, t):
    router = causal_router(training)
    n = 48
    x = torch.randn(2, n, DIM)
    y = x.clone()
    y[:, t + 1:] = torch.randn(2, n - t - 1, DIM) * 3
    first, second = router(x, num_tokens=12), router(y, num_tokens=12)

    def per_position(r):
        w = torch.zeros(2, n).scatter_add(-1, r.indices[:, 0], r.weights[:, 0])
        return routed_positions(r, n)[:, 0], w

    (c1, w1), (c2, w2) = per_position(first), per_position(second)
    assert torch.equal(c1[:, : t + 1], c2[:, : t + 1])
    torch.testing.assert_close(w1[:, : t + 1], w2[:, : t + 1], atol=1e-6, rtol=0)


def test_causal_router_takes_only_int_counts():
    with pytest.raises(TypeError, match="num_tokens"):
        causal_router()(torch.randn(2, 16, DIM), num_tokens=torch.tensor([2, 2]))


def test_causal_router_gradient_reaches_its_routing_token():
    router = causal_router(training=True)
    routing = router(torch.randn(2, 48, DIM), num_tokens=12)
    (routing.weights.unsqueeze(-1) * routing.tokens).sum().backward()
    assert torch.isfinite(router.routing_tokens.grad).all() and router.routing_tokens.grad.abs().sum() > 0


@pytest.mark.parametrize("detach_input", [False, True], ids=["attached", "detached"])
@pytest.mark.parametrize("make", [lambda **kw: Router(DIM, **kw).train(),
                                  lambda **kw: causal_router(training=True, **kw)], ids=["router", "causal"])
def test_detach_input_keeps_the_weights_gradient_off_the_scored_tokens(make, detach_input):
    router = make(detach_input=detach_input)
    x = torch.randn(2, 48, DIM, requires_grad=True)
    routing = router(x, num_tokens=12)
    routing.weights.sum().backward()  # only the weights, so x's gradient can come only through the scores
    assert router.routing_tokens.grad.abs().sum() > 0
    assert (x.grad is None or x.grad.abs().sum() == 0) == detach_input


# ---------------------------------------------------------------- exploration noise and routing by hand

@pytest.mark.parametrize("make", [lambda: Router(DIM), lambda: causal_router()], ids=["router", "causal"])
def test_score_noise_changes_training_routes_but_never_eval_routes(make):
    router = make()
    router.score_noise = 5.0
    x = torch.randn(2, 48, DIM)
    router.train()
    assert not torch.equal(router(x, num_tokens=12).indices, router(x, num_tokens=12).indices)
    router.eval()
    assert torch.equal(router(x, num_tokens=12).indices, router(x, num_tokens=12).indices)


@pytest.mark.parametrize("make", [lambda: Router(DIM, score_noise=1.0, eval_noise="fixed"),
                                  lambda: causal_router(score_noise=1.0, eval_noise="fixed")], ids=["router", "causal"])
def test_fixed_eval_noise_breaks_ties_the_same_way_for_every_input_and_call(make):
    router = make().eval()
    x = torch.randn(1, 1, DIM).expand(2, 96, DIM)  # every token alike: every score ties
    first, again = router(x, num_tokens=12), router(x, num_tokens=12)
    assert torch.equal(first.indices, again.indices) and torch.equal(first.weights, again.weights)
    assert torch.equal(first.indices[0], first.indices[1])  # one draw for every input of the batch
    router.eval_noise = "none"
    assert not torch.equal(router(x, num_tokens=12).scores, first.scores)


@pytest.mark.parametrize("make", [lambda: Router(DIM, score_noise=1.0, eval_noise="fixed"),
                                  lambda: causal_router(score_noise=1.0, eval_noise="fixed")], ids=["router", "causal"])
def test_fixed_eval_noise_leaves_training_noise_fresh(make):
    router = make().train()
    x = torch.randn(2, 48, DIM)
    assert not torch.equal(router(x, num_tokens=12).scores, router(x, num_tokens=12).scores)


@settings(max_examples=20, deadline=None)
@given(short=st.integers(1, 2100), extra=st.integers(0, 2100), routes=st.integers(1, 3))
def test_fixed_noise_of_a_prefix_is_the_prefix_of_the_longer_draw(short, extra, routes):
    from colt5_lightning.routing.router import fixed_noise
    assert torch.equal(fixed_noise(routes, short), fixed_noise(routes, short + extra)[:, :short])


@pytest.mark.parametrize("t", [3, 20, 39])
def test_a_causal_router_with_fixed_eval_noise_decides_up_to_t_without_the_tokens_after_t(t):
    router = causal_router(score_noise=1.0, eval_noise="fixed")
    x = torch.randn(2, 48, DIM)
    y = x.clone()
    y[:, t + 1:] = torch.randn(2, 48 - t - 1, DIM) * 3
    c1, c2 = (routed_positions(router(v, num_tokens=12), 48)[:, 0] for v in (x, y))
    assert torch.equal(c1[:, : t + 1], c2[:, : t + 1])


@pytest.mark.parametrize("make", [lambda **kw: Router(DIM, **kw), lambda **kw: causal_router(**kw)],
                         ids=["router", "causal"])
def test_an_unknown_eval_noise_is_named(make):
    with pytest.raises(ValueError, match="eval_noise"):
        make(eval_noise="random")


def test_negative_score_noise_is_named():
    with pytest.raises(ValueError, match="score_noise"):
        Router(DIM, score_noise=-1.0)


@pytest.mark.parametrize("make", [lambda: Router(DIM).eval(), lambda: causal_router()], ids=["router", "causal"])
def test_forced_routing_routes_the_marked_tokens_at_full_weight_and_then_lets_go(make):
    from colt5_lightning.routing.oracle import forced_routing
    router = make()
    wrapper = torch.nn.Sequential(router)
    n = 48
    forced = torch.zeros(2, n, dtype=torch.bool)
    forced[:, [2, 20, 21, 22, 40, 47]] = True  # segment 0 too: forced tokens bypass the causal rules
    x = torch.randn(2, n, DIM)
    with forced_routing(wrapper, forced):
        routing = router(x, num_tokens=12)
    weight = torch.zeros(2, n).scatter_add(-1, routing.indices[:, 0], routing.weights[:, 0])
    assert (weight[forced] == 1).all()
    assert router.forced is None


@pytest.mark.parametrize("kinds, forced_names", [(["kv"], {"attn.kv_router"}),
                                                 (["q", "ff"], {"attn.q_router", "ff.router"}),
                                                 (None, {"attn.q_router", "attn.kv_router", "ff.router"})])
def test_forced_routing_can_be_limited_to_router_kinds(kinds, forced_names):
    from colt5_lightning import ConditionalRoutedTransformerBlock
    from colt5_lightning.routing.oracle import forced_routing
    block = ConditionalRoutedTransformerBlock(DIM, light_dim_head=8, light_heads=2, light_window_size=8,
                                              heavy_dim_head=8, heavy_heads=2, num_heavy_attn_tokens_q=4,
                                              num_heavy_attn_tokens_kv=4, num_heavy_ff_tokens=4)
    seen = {}
    with forced_routing(block, torch.ones(1, 16, dtype=torch.bool), kinds):
        seen = {name for name, m in block.named_modules() if getattr(m, "forced", None) is not None}
    assert seen == forced_names
    assert all(getattr(m, "forced", None) is None for m in block.modules())


def test_an_unknown_router_kind_is_named():
    from colt5_lightning.routing.oracle import forced_routing
    with pytest.raises(ValueError, match="router kind"):
        with forced_routing(Router(DIM), torch.ones(1, 4, dtype=torch.bool), ["query"]):
            pass


def test_forced_routing_mask_must_be_batch_by_seq_bool():
    from colt5_lightning.routing.oracle import forced_routing
    with pytest.raises(ValueError, match="bool"):
        with forced_routing(Router(DIM), torch.zeros(2, 4)):
            pass


@pytest.mark.parametrize("training", [False, True])
def test_a_per_sample_count_beyond_int64_range_after_over_fetch_routes_every_token(router_type, training):
    router = Router(DIM, router_type=router_type).train(training)
    routing = router(torch.randn(2, 32, DIM), num_tokens=torch.tensor([2**63 - 1, 3]))
    assert routing.routed_mask[0, 0].sum() == 32


def test_routing_the_first_segment_by_itself_changes_nothing_after_it():
    """Only segment 0 is judged by its own threshold; later segments see the same thresholds as
    with a query router (a capacity that never binds isolates the thresholds)."""
    n, k = 64, 16
    query_router = causal_router(burst=1.0)
    kv_router = causal_router(burst=1.0, route_first_segment=True)
    kv_router.load_state_dict(query_router.state_dict())
    x = torch.randn(3, n, DIM)
    from_query = routed_positions(query_router(x, num_tokens=k), n)[:, 0]
    from_kv = routed_positions(kv_router(x, num_tokens=k), n)[:, 0]
    assert torch.equal(from_query[:, SEG:], from_kv[:, SEG:])
    assert from_kv[:, :SEG].sum() > 0


def test_an_input_longer_than_the_reference_length_is_named():
    router = CausalRouter(DIM, segment_size=SEG, reference_len=32)
    with pytest.raises(ValueError, match="reference_len 32"):
        router(torch.randn(1, 40, DIM), num_tokens=4)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(1, 100), L=st.sampled_from([1, 3, 8, 16]),
       H=st.integers(1, 6), rate=st.sampled_from([0.004, 0.02, 0.07, 0.25, 0.5, 1.0, 1.7]),
       eps=st.sampled_from([0.03, 0.3]), offset=st.sampled_from([0.0, -300.0, 1e4, 1e6]),
       spread=st.sampled_from([0.1, 1.0, 10.0]), p_pad=st.sampled_from([0.0, 0.3, 0.9]),
       ties=st.booleans())
def test_window_duals_equal_the_exact_solve_on_the_whole_windows(seed, n, L, H, rate, eps, offset, spread, p_pad, ties):
    g = torch.Generator().manual_seed(seed)
    scores = offset + spread * torch.randn(2, 2, n, generator=g)
    if ties:  # repeated values: the top-k lists must still cover every rank
        scores = offset + torch.round(scores - offset)
    valid = torch.rand(2, 2, n, generator=g) >= p_pad
    valid[0, 0] = False  # a fully masked row
    if n > L:
        valid[1, 1, :L] = False  # a fully masked segment
    scores = torch.where(valid, scores, torch.randn(2, 2, n, generator=g) * 1e3)  # padding is ignored
    seg_scores, seg_valid = to_segments(scores, L), to_segments(valid, L, fill=False)
    window_valid = windows_before(seg_valid, H, False)
    expected = dual_per_row(windows_before(seg_scores, H, 0.0), rate * window_valid.sum(-1, keepdim=True),
                            window_valid, n_iters=1, eps=eps, eps_init=None, eps_decay=1.0, method="exact",
                            fused=False)[..., 0]
    got = window_duals(seg_scores, seg_valid, H, rate, eps)
    assert got.shape == expected.shape
    assert torch.equal(torch.isfinite(got), torch.isfinite(expected))
    assert torch.equal(got == float("-inf"), expected == float("-inf"))
    finite = torch.isfinite(expected)
    assert (got[finite] - expected[finite]).abs().max().item() <= 1e-5 if finite.any() else True


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(1, 100), L=st.sampled_from([1, 3, 8, 16]), H=st.integers(1, 6),
       rates=st.lists(st.sampled_from([0.004, 0.02, 0.07, 0.25, 0.5, 1.0, 1.7]), min_size=1, max_size=3),
       p_pad=st.sampled_from([0.0, 0.3, 0.9]))
def test_window_duals_for_several_rates_equal_one_solve_per_rate(seed, n, L, H, rates, p_pad):
    """A causal router solves its k and over-fetch thresholds in one pass; each must be the dual
    its rate alone gives."""
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(2, 2, n, generator=g) >= p_pad
    seg_scores = to_segments(torch.randn(2, 2, n, generator=g), L)
    seg_valid = to_segments(valid, L, fill=False)
    together = window_duals(seg_scores, seg_valid, H, tuple(rates), 0.03)
    assert together.shape[0] == len(rates)
    for rate, got in zip(rates, together):
        alone = window_duals(seg_scores, seg_valid, H, rate, 0.03)
        assert torch.equal(got == float("-inf"), alone == float("-inf"))
        finite = torch.isfinite(alone)
        torch.testing.assert_close(got[finite], alone[finite], atol=1e-5, rtol=0)


def test_window_duals_name_non_finite_scores_like_the_whole_window_solve():
    seg_scores = torch.randn(1, 1, 4, 8)
    seg_valid = torch.ones(1, 1, 4, 8, dtype=torch.bool)
    seg_scores[0, 0, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        window_duals(seg_scores, seg_valid, 2, 0.1, 0.03)
    seg_scores[0, 0, 1, 3] = 0.0
    seg_scores[0, 0, 3, 3] = float("nan")  # the last segment is in no window
    window_duals(seg_scores, seg_valid, 2, 0.1, 0.03)


@pytest.mark.parametrize("causal", [False, True])
def test_fetch_k_ratio_is_colt5_attentions_name_for_over_fetch(causal):
    from colt5_lightning.routing.causal import CausalRouter
    router = CausalRouter(DIM, segment_size=4, fetch_k_ratio=1.5) if causal else Router(DIM, fetch_k_ratio=1.5)
    assert router.over_fetch == 1.5
    with pytest.raises(ValueError, match="same setting"):
        Router(DIM, over_fetch=1.25, fetch_k_ratio=1.5)


@pytest.mark.parametrize("router_type", ROUTER_TYPES)
def test_random_route_routes_by_chance_not_by_score(router_type):
    torch.manual_seed(0)
    router = Router(DIM, router_type=router_type).eval()
    x = torch.randn(1, 64, DIM)
    learned = router(x, num_tokens=8).indices
    assert torch.equal(router(x, num_tokens=8).indices, learned)  # deterministic without it
    assert any(not torch.equal(router(x, num_tokens=8, random_route=True).indices.sort(-1).values,
                               learned.sort(-1).values) for _ in range(3))
