"""The routed layers: shapes, gradients to every parameter, every flag, masks, per-call token
counts, image layouts and cross-attention masks. Tiny sizes throughout."""
import pytest
import torch

from colt5_lightning import (
    ConditionalRoutedAttention,
    ConditionalRoutedAutoregressiveAttention,
    ConditionalRoutedCrossAttention,
    ConditionalRoutedFeedForward,
    ConditionalRoutedImageAttention,
    ConditionalRoutedTransformerBlock,
)
from colt5_lightning.routing import ROUTER_TYPES, Router
from colt5_lightning.routing.causal import CausalRouter

DIM, WIN, K = 32, 16, 16
ATTN = dict(light_dim_head=16, light_heads=2, light_window_size=WIN, heavy_dim_head=16, heavy_heads=4)
KINDS = ("ff", "causal_ff", "attn", "autoregressive", "image", "cross", "block", "causal_block")
ATTENTION_KINDS = ("attn", "autoregressive", "image", "block", "causal_block")  # take num_routed_kv, kv_scaling
CAUSAL_KINDS = ("causal_ff", "autoregressive", "causal_block")


def build(kind, router_type="coor_descent", **kw):
    if kind == "cross":  # the cross-attention name for the number of key/value routes
        kw["kv_routing_tokens"] = kw.pop("num_routed_kv", 1)
    routing = dict(router_type=router_type, **kw)
    if kind in ("ff", "causal_ff"):
        return ConditionalRoutedFeedForward(DIM, num_heavy_tokens=K, causal=kind == "causal_ff",
                                            causal_segment_size=WIN, **routing)
    if kind == "attn":
        return ConditionalRoutedAttention(DIM, num_heavy_tokens_q=K, num_heavy_tokens_kv=K, **ATTN, **routing)
    if kind == "autoregressive":
        return ConditionalRoutedAutoregressiveAttention(DIM, num_heavy_tokens_q=K, num_heavy_tokens_kv=K,
                                                        **ATTN, **routing)
    if kind == "image":
        return ConditionalRoutedImageAttention(DIM, num_heavy_tokens_q=K, num_heavy_tokens_kv=K,
                                               **{**ATTN, "light_window_size": 4}, **routing)
    if kind == "cross":
        return ConditionalRoutedCrossAttention(DIM, num_tokens_q=K, num_tokens_kv=K, dim_head=16, heads=4, **routing)
    return ConditionalRoutedTransformerBlock(DIM, num_heavy_attn_tokens_q=K, num_heavy_attn_tokens_kv=K,
                                             num_heavy_ff_tokens=K, causal=kind == "causal_block",
                                             **ATTN, **routing)


def inputs(kind, n=64, b=2):
    """Positional args for forward: a sequence of n tokens (an 8×8 map for images, n=64)."""
    if kind == "image":
        side = int(n ** 0.5)
        return (torch.randn(b, side, side, DIM),)
    if kind == "cross":
        return torch.randn(b, n, DIM), torch.randn(b, 2 * n, DIM)
    return (torch.randn(b, n, DIM),)


def assert_every_parameter_has_a_finite_gradient(module, nonzero=True):
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        if nonzero:
            assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


def routers(module):
    return [m for name, m in module.named_modules() if name.endswith("router")]


def capture_routings(router, with_mask=False):
    """Every Routing the router returns from now on (with the mask it was given, if with_mask)."""
    seen = []
    router.register_forward_hook(
        lambda mod, args, kwargs, out: seen.append((out, kwargs.get("mask")) if with_mask else out), with_kwargs=True)
    return seen


# ---------------------------------------------------------------- shapes and gradients


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("router_type", ROUTER_TYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_output_shape_and_gradients_reach_every_parameter(kind, router_type, training):
    # A causal router's routing token learns from the tokens it over-fetches (weight below 1): at
    # 64 tokens the default 9/8 band holds about one token, so here it is widened to 2.
    kw = dict(router_kwargs={"over_fetch": 2.0}) if kind in CAUSAL_KINDS else {}
    module = build(kind, router_type, **kw).train(training)
    args = inputs(kind)
    out = module(*args)
    assert out.shape == args[0].shape and out.dtype == torch.float32
    (out * torch.randn_like(out)).sum().backward()
    # In eval mode the causal router's routed tokens all sit above its threshold (weight exactly 1),
    # so its routing token may get a zero gradient there; in training the over-fetched ones are soft.
    assert_every_parameter_has_a_finite_gradient(module, nonzero=training or kind not in CAUSAL_KINDS)


FLAGS = [dict(router_straight_through=st, kv_scaling=kv, num_routed_kv=r)
         for st, kv, r in [(False, "inputs", 1), (True, "values", 2), (True, "inputs", 2), (False, "values", 1)]]


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "-".join(map(str, f.values())))
@pytest.mark.parametrize("router_type", ROUTER_TYPES)
@pytest.mark.parametrize("kind", ATTENTION_KINDS + ("cross",))
def test_every_flag_combination_runs_and_trains(kind, router_type, flags):
    module = build(kind, router_type, **flags)
    args = inputs(kind)
    out = module(*args)
    assert out.shape == args[0].shape
    (out * torch.randn_like(out)).sum().backward()
    assert_every_parameter_has_a_finite_gradient(module)
    kv_router = module.attn.kv_router if hasattr(module, "attn") else module.kv_router
    assert kv_router.num_routing_tokens == flags["num_routed_kv"]


def test_kv_scaling_modes_differ():
    x = torch.randn(2, 64, DIM)
    a = build("attn", kv_scaling="inputs", router_straight_through=False)
    b = build("attn", kv_scaling="values", router_straight_through=False)
    b.load_state_dict(a.state_dict())
    assert not torch.allclose(a(x), b(x))


def test_multiply_keys_by_score_is_the_papers_keys_and_values_scaling():
    x = torch.randn(2, 64, DIM)
    a = build("attn", multiply_keys_by_score=True, router_straight_through=False)
    b = build("attn", kv_scaling="inputs", router_straight_through=False)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), b(x))
    assert build("attn").heavy.kv_scaling == "values"  # colt5-attention's default: values only


def test_multiply_keys_by_score_with_values_only_scaling_is_rejected():
    with pytest.raises(ValueError, match="multiply_keys_by_score"):
        build("attn", multiply_keys_by_score=True, kv_scaling="values")


@pytest.mark.parametrize("kind", ("attn", "autoregressive", "image", "block"))
def test_multiply_queries_by_score_scales_the_routed_queries(kind):
    torch.manual_seed(0)
    a = build(kind, router_straight_through=False)
    b = build(kind, router_straight_through=False, multiply_queries_by_score=True)
    b.load_state_dict(a.state_dict())
    x = inputs(kind)
    assert not torch.allclose(a(*x), b(*x))


@pytest.mark.parametrize("kind", ("attn", "autoregressive", "cross"))
@pytest.mark.parametrize("null", [True, False])
def test_queries_not_routed_get_the_null_token_or_nothing(kind, null):
    torch.manual_seed(0)
    extra = {} if kind == "cross" else dict(has_light_attn=False)
    module = build(kind, use_null_q_tokens=null, **extra).eval()
    args = inputs(kind)
    out = module(*args)
    unrouted = (out.abs().sum(-1) == 0) if not null else torch.isclose(out, module.null_q_token).all(-1)
    assert 0 < unrouted.sum() < out.shape[0] * out.shape[1]  # some positions routed, some not
    assert (module.null_q_token is not None) == null


@pytest.mark.parametrize("kind", ("attn", "autoregressive", "image", "block"))
def test_without_light_attention_there_is_no_light_branch(kind):
    module = build(kind, has_light_attn=False)
    attention = module.attn if hasattr(module, "attn") else module
    assert not hasattr(attention, "light")
    out = module(*inputs(kind))
    assert torch.isfinite(out).all()


def test_an_attention_with_neither_branch_is_rejected():
    with pytest.raises(ValueError, match="no branch"):
        build("attn", heavy=False, has_light_attn=False)


@pytest.mark.parametrize("kind", KINDS)
def test_colt5_attention_defaults_are_kept(kind):
    module = build(kind)
    routers = [m for m in module.modules() if isinstance(m, (Router, CausalRouter))]
    assert routers and all(r.straight_through for r in routers)
    if kind not in ("ff", "causal_ff"):
        attention = getattr(module, "attn", module)
        assert attention.null_q_token is not None


@pytest.mark.parametrize("router_type", ROUTER_TYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_shorter_than_k_routes_every_token_and_still_trains(kind, router_type):
    """n ≤ k: every valid token is routed with weight 1 and every parameter still gets a gradient
    (zero for the routing tokens, which have nothing to choose, but never None). Causal query
    routing is the exception by design: a single segment has no past to route by."""
    module = build(kind, router_type)
    args = inputs(kind, n=9 if kind != "image" else 16)  # an image of 4×4 = 16 = K pixels
    args = tuple(a[:, :8] if kind == "cross" else a for a in args)
    seen = [capture_routings(r, with_mask=True) for r in routers(module) if type(r).__name__ == "Router"]
    out = module(*args)
    (out * torch.randn_like(out)).sum().backward()
    assert_every_parameter_has_a_finite_gradient(module, nonzero=False)
    assert all(seen)  # every plain Router ran (the causal FF has none)
    for captured in seen:
        for routing, mask in captured:
            b, r, n = routing.scores.shape
            valid = torch.ones(b, n, dtype=torch.bool) if mask is None else mask
            positions = torch.zeros(b, r, n, dtype=torch.long).scatter_add(-1, routing.indices,
                                                                           routing.routed_mask.long())
            assert torch.equal(positions == 1, valid.unsqueeze(1).expand(b, r, n))
            torch.testing.assert_close(routing.weights, routing.routed_mask.float())


# ---------------------------------------------------------------- masks


NON_CAUSAL = ("ff", "attn", "image", "block")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("router_type", ROUTER_TYPES)
@pytest.mark.parametrize("kind", NON_CAUSAL)
def test_padded_tokens_are_never_routed_and_never_reach_real_outputs(kind, router_type, training):
    module = build(kind, router_type).train(training)
    (x,) = inputs(kind)
    mask = torch.ones(x.shape[:-1], dtype=torch.bool)
    if kind == "image":
        mask[0, 6:] = False   # the bottom two rows of image 0
        mask[1, :, 7] = False  # the last column of image 1
    else:
        mask[0, 40:] = False
        mask[1, 10:20] = False
    seen = [capture_routings(r) for r in routers(module)]
    out = module(x, mask=mask)
    y = x.clone()
    y[~mask] = torch.randn_like(y[~mask]) * 5
    out_perturbed = module(y, mask=mask)
    torch.testing.assert_close(out[mask], out_perturbed[mask], atol=1e-5, rtol=1e-5)
    flat = mask.reshape(mask.shape[0], -1)
    for captured in seen:
        for routing in captured:
            is_valid = flat.unsqueeze(1).expand(-1, routing.indices.shape[1], -1).gather(-1, routing.indices)
            assert is_valid[routing.routed_mask].all()
            assert routing.routed_mask.any()


# ---------------------------------------------------------------- per-call routed counts


def test_feedforward_per_call_count_overrides_the_default():
    ff = build("ff").eval()
    (seen,) = [capture_routings(r) for r in routers(ff)]
    x = torch.randn(2, 64, DIM)
    ff(x)
    ff(x, num_heavy_tokens=5)
    ff(x, num_heavy_tokens=torch.tensor([3, 30]))
    assert [r.routed_mask.sum(-1).flatten().tolist() for r in seen] == [[K, K], [5, 5], [3, 30]]


@pytest.mark.parametrize("kind", ("attn", "image"))
def test_attention_per_call_counts_override_queries_and_key_values(kind):
    module = build(kind).eval()
    q_seen, kv_seen = capture_routings(module.q_router), capture_routings(module.kv_router)
    (x,) = inputs(kind)
    module(x, num_heavy_tokens_q=4, num_heavy_tokens_kv=9)
    assert q_seen[-1].routed_mask.sum(-1).flatten().tolist() == [4, 4]
    assert kv_seen[-1].routed_mask.sum(-1).flatten().tolist() == [9, 9]


def test_block_per_call_counts_override_every_router():
    block = build("block").eval()
    seen = {name: capture_routings(r) for name, r in [("q", block.attn.q_router), ("kv", block.attn.kv_router),
                                                         ("ff", block.ff.router)]}
    block(torch.randn(2, 64, DIM), num_heavy_attn_tokens_q=3, num_heavy_attn_tokens_kv=5, num_heavy_ff_tokens=7)
    assert {name: s[-1].routed_mask.sum().item() for name, s in seen.items()} == {"q": 6, "kv": 10, "ff": 14}


def test_cross_attention_per_call_counts_override_the_defaults():
    cross = build("cross").eval()
    q_seen, kv_seen = capture_routings(cross.q_router), capture_routings(cross.kv_router)
    x, context = inputs("cross")
    cross(x, context, num_tokens_q=2, num_tokens_kv=torch.tensor([5, 50]))
    assert q_seen[-1].routed_mask.sum(-1).flatten().tolist() == [2, 2]
    assert kv_seen[-1].routed_mask.sum(-1).flatten().tolist() == [5, 50]


@pytest.mark.parametrize("kind", ("causal_ff", "autoregressive"))
def test_causal_per_call_count_changes_the_routed_budget(kind):
    module = build(kind).eval()
    router = module.router if kind == "causal_ff" else module.q_router
    seen = capture_routings(router)
    x = torch.randn(2, 128, DIM)
    module(x)
    module(x, **({"num_heavy_tokens": 64} if kind == "causal_ff" else {"num_heavy_tokens_q": 64}))
    small, large = (r.routed_mask.sum().item() for r in seen)
    assert large > small > 0


# ---------------------------------------------------------------- image attention


@pytest.mark.parametrize("router_type", ROUTER_TYPES)
def test_image_channel_first_layout_gives_the_same_result(router_type):
    last = build("image", router_type).eval()
    first = ConditionalRoutedImageAttention(DIM, num_heavy_tokens_q=K, num_heavy_tokens_kv=K, channel_first=True,
                                            router_type=router_type, **{**ATTN, "light_window_size": 4}).eval()
    first.load_state_dict(last.state_dict())
    x = torch.randn(2, 8, 8, DIM)
    mask = torch.rand(2, 8, 8) > 0.2
    out_first = first(x.permute(0, 3, 1, 2), mask=mask)
    assert out_first.shape == (2, DIM, 8, 8)
    torch.testing.assert_close(out_first.permute(0, 2, 3, 1), last(x, mask=mask), atol=1e-5, rtol=1e-5)


def test_image_light_branch_attends_within_window_by_window_tiles():
    module = build("image").eval()  # light_window_size = 4 on an 8×8 map: four 4×4 tiles
    x = torch.randn(1, 8, 8, DIM)
    y = x.clone()
    y[0, 5, 2] += 1.0  # a pixel of the bottom-left tile
    delta = (module.light(y) - module.light(x)).abs().sum(-1)[0]
    tile = torch.zeros(8, 8, dtype=torch.bool)
    tile[4:8, 0:4] = True
    assert (delta[tile] > 0).all()
    assert (delta[~tile] == 0).all()


def test_image_rectangular_maps_work():
    module = build("image")
    out = module(torch.randn(2, 4, 12, DIM))
    assert out.shape == (2, 4, 12, DIM)


# ---------------------------------------------------------------- cross attention


@pytest.mark.parametrize("router_type", ROUTER_TYPES)
def test_cross_attention_masked_context_is_never_routed_nor_seen(router_type):
    cross = build("cross", router_type).eval()
    kv_seen = capture_routings(cross.kv_router)
    x, context = inputs("cross")
    context_mask = torch.rand(context.shape[:2]) > 0.5
    out = cross(x, context, context_mask=context_mask)
    changed = context.clone()
    changed[~context_mask] = torch.randn_like(changed[~context_mask]) * 5
    torch.testing.assert_close(cross(x, changed, context_mask=context_mask), out, atol=1e-5, rtol=1e-5)
    for routing in kv_seen:
        assert context_mask.gather(1, routing.indices[:, 0])[routing.routed_mask[:, 0]].all()
    changed[context_mask] = torch.randn_like(changed[context_mask])
    assert not torch.allclose(cross(x, changed, context_mask=context_mask), out)  # the check is not vacuous


@pytest.mark.parametrize("null", [False, True])
def test_cross_attention_masked_queries_get_no_attention_output(null):
    cross = build("cross", use_null_q_tokens=null).eval()
    x, context = inputs("cross")
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    mask[:, ::3] = False
    out = cross(x, context, mask=mask)
    nothing = cross.null_q_token.detach() if null else torch.zeros(DIM)
    unrouted = torch.isclose(out, nothing).all(-1)
    assert unrouted[~mask].all()
    assert (~unrouted[mask]).sum() == 2 * K  # exactly the K routed queries of each sample


@pytest.mark.parametrize("router_type", ROUTER_TYPES)
def test_cross_attention_with_two_kv_routing_tokens_and_four_heads(router_type):
    cross = ConditionalRoutedCrossAttention(DIM, num_tokens_q=8, num_tokens_kv=12, dim_head=8, heads=4,
                                            kv_routing_tokens=2, router_type=router_type)
    kv_seen = capture_routings(cross.kv_router)
    x, context = torch.randn(2, 32, DIM), torch.randn(2, 100, DIM)
    out = cross(x, context, mask=torch.ones(2, 32, dtype=torch.bool),
                context_mask=torch.ones(2, 100, dtype=torch.bool))
    assert out.shape == (2, 32, DIM)
    assert kv_seen[0].indices.shape[:2] == (2, 2)
    out.sum().backward()
    assert_every_parameter_has_a_finite_gradient(cross)


def test_cross_attention_context_may_have_its_own_width():
    cross = ConditionalRoutedCrossAttention(DIM, num_tokens_q=8, num_tokens_kv=8, dim_head=8, heads=2,
                                            dim_context=48)
    assert cross(torch.randn(2, 20, DIM), torch.randn(2, 30, 48)).shape == (2, 20, DIM)


@pytest.mark.parametrize("query_conditioned", [False, True])
def test_the_memories_routed_depend_on_the_source_exactly_when_routing_is_query_conditioned(query_conditioned):
    torch.manual_seed(0)
    cross = ConditionalRoutedCrossAttention(DIM, num_tokens_q=8, num_tokens_kv=8, dim_head=8, heads=4,
                                            kv_routing_tokens=2, query_conditioned_kv_routing=query_conditioned).eval()
    kv_seen = capture_routings(cross.kv_router)
    context = torch.randn(1, 200, DIM)
    for _ in range(2):
        cross(torch.randn(1, 32, DIM), context)
    same = torch.equal(kv_seen[0].indices.sort(-1).values, kv_seen[1].indices.sort(-1).values)
    assert same != query_conditioned


def test_query_conditioned_kv_routing_trains_its_queries_and_ignores_masked_source_tokens():
    cross = ConditionalRoutedCrossAttention(DIM, num_tokens_q=8, num_tokens_kv=8, dim_head=8, heads=2,
                                            query_conditioned_kv_routing=True, dim_context=48)
    x, context = torch.randn(2, 32, DIM), torch.randn(2, 100, 48)
    mask = torch.ones(2, 32, dtype=torch.bool)
    mask[0] = False  # a source with no valid token still routes (from a uniform summary), without NaN
    mask[1, 16:] = False
    out = cross(x, context, mask=mask)
    out.sum().backward()
    assert_every_parameter_has_a_finite_gradient(cross)
    changed = x.clone()
    changed[1, 16:] = torch.randn(16, DIM) * 5
    torch.testing.assert_close(cross._kv_routing_tokens(cross.norm(changed), mask)[1],
                               cross._kv_routing_tokens(cross.norm(x), mask)[1])


def test_num_sets_kv_is_colt5_attentions_name_for_kv_routing_tokens():
    cross = ConditionalRoutedCrossAttention(DIM, num_tokens_q=8, num_tokens_kv=8, dim_head=8, heads=4, num_sets_kv=2)
    assert cross.kv_router.num_routing_tokens == 2
    with pytest.raises(ValueError, match="num_sets_kv=2 and kv_routing_tokens=4"):
        ConditionalRoutedCrossAttention(DIM, num_tokens_q=8, num_tokens_kv=8, dim_head=8, heads=4, num_sets_kv=2,
                                        kv_routing_tokens=4)


def test_cross_attention_route_block_size_routes_memories_evenly():
    cross = ConditionalRoutedCrossAttention(DIM, num_tokens_q=8, num_tokens_kv=8, dim_head=8, heads=2,
                                            route_block_size=25).eval()
    kv_seen = capture_routings(cross.kv_router)
    cross(torch.randn(2, 32, DIM), torch.randn(2, 100, DIM))
    assert torch.equal(torch.bincount(kv_seen[0].indices.flatten() // 25), torch.full((4,), 4))


# ---------------------------------------------------------------- the heavy branch matters


@pytest.mark.parametrize("kind", ("ff", "attn"))
def test_only_routed_tokens_receive_the_heavy_branch(kind):
    module = build(kind).eval()
    x = torch.randn(2, 64, DIM)
    router = module.router if kind == "ff" else module.q_router
    seen = capture_routings(router)
    with torch.no_grad():
        full = module(x)
        for p in (module.heavy_ff if kind == "ff" else module.heavy).parameters():
            p.zero_()
        light_only = module(x)
    touched = (full - light_only).abs().sum(-1) > 0
    routed = torch.zeros(2, 64, dtype=torch.bool).scatter(1, seen[0].indices[:, 0], seen[0].routed_mask[:, 0])
    assert (touched <= routed).all() and touched.any()


def test_light_checkpoint_gives_the_same_gradients():
    from colt5_lightning import ConditionalRoutedTransformerBlock
    kwargs = dict(light_dim_head=8, light_heads=2, light_window_size=8, heavy_dim_head=8, heavy_heads=2,
                  num_heavy_attn_tokens_q=8, num_heavy_attn_tokens_kv=8, num_heavy_ff_tokens=8)
    plain = ConditionalRoutedTransformerBlock(16, **kwargs)
    checkpointed = ConditionalRoutedTransformerBlock(16, light_checkpoint=True, **kwargs)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 40, 16)
    grads = []
    for block in (plain, checkpointed):
        xx = x.clone().requires_grad_()
        block(xx).square().sum().backward()
        grads.append(xx.grad)
    torch.testing.assert_close(grads[1], grads[0])


def dense_reference_local_attention(q, k, v, reach_back, reach_forward, key_mask):
    """Full attention with an explicit (n × n) band mask: query t sees keys t - reach_back ..
    t + reach_forward; padded keys are hidden except a query's own."""
    b, n, h, d = q.shape
    offset = torch.arange(n).view(1, n) - torch.arange(n).view(n, 1)  # key minus query
    allowed = (offset >= -reach_back) & (offset <= reach_forward)
    allowed = (allowed & key_mask.view(b, 1, 1, n)) | torch.eye(n, dtype=torch.bool)
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                           v.transpose(1, 2), attn_mask=allowed)
    return out.transpose(1, 2)


@pytest.mark.parametrize("reach", [(8, 8), (16, 0), (5, 3), (7, 0)], ids=["pm8", "causal16", "5back3fwd", "causal7"])
@pytest.mark.parametrize("n", [32, 37])
def test_blocked_local_attention_is_an_exact_sliding_window(reach, n):
    from colt5_lightning.layers.local_attention import blocked_local_attention
    q, k, v = (torch.randn(2, n, 3, 8) for _ in range(3))
    key_mask = torch.rand(2, n) > 0.2
    got = blocked_local_attention(q, k, v, block=8, reach_back=reach[0], reach_forward=reach[1], key_mask=key_mask)
    torch.testing.assert_close(got, dense_reference_local_attention(q, k, v, *reach, key_mask),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("reach", [(8, 8), (16, 0), (5, 3), (30, 0)], ids=["pm8", "causal16", "5back3fwd", "causal30"])
@pytest.mark.parametrize("n", [5, 37])
def test_blocked_local_attention_has_the_sliding_windows_gradients(reach, n):
    """The look-around's own backward (strided adds) against autograd through the dense band mask,
    including windows that reach past the sequence's start and end (n = 5: fewer blocks than
    neighbours)."""
    from colt5_lightning.layers.local_attention import blocked_local_attention
    q, k, v = (torch.randn(2, n, 3, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    key_mask = torch.rand(2, n) > 0.2
    grad_out = torch.randn(2, n, 3, 8, dtype=torch.float64)
    got = torch.autograd.grad(blocked_local_attention(q, k, v, block=4, reach_back=reach[0], reach_forward=reach[1],
                                                      key_mask=key_mask), (q, k, v), grad_out)
    want = torch.autograd.grad(dense_reference_local_attention(q, k, v, *reach, key_mask), (q, k, v), grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("offsets", [(2, 1, 0), (1, 0, -1), (4, 3, 2, 1, 0), (0, -1, -2), (7, 6, 5)])
@pytest.mark.parametrize("num_blocks", [1, 3, 6])
@pytest.mark.parametrize("dtype, fill", [(torch.float64, 0.0), (torch.bool, False)])
def test_look_around_places_block_j_minus_each_offset_and_fills_the_rest(offsets, num_blocks, dtype, fill):
    from colt5_lightning.layers.local_attention import _look_around
    blocks = torch.randn(2, num_blocks, 3, 4) > 0 if dtype is torch.bool else torch.randn(2, num_blocks, 3, 4,
                                                                                           dtype=dtype)
    got = _look_around(blocks, offsets, fill).view(2, num_blocks, len(offsets), 3, 4)
    for j in range(num_blocks):
        for slot, offset in enumerate(offsets):
            source = j - offset
            want = blocks[:, source] if 0 <= source < num_blocks else torch.full_like(blocks[:, 0], fill)
            assert torch.equal(got[:, j, slot], want)


@pytest.mark.parametrize("offsets", [(2, 1, 0), (1, 0, -1), (0, -1, -2)])
def test_look_around_gradient_sums_in_a_gathers_order_bit_for_bit(offsets):
    """Runs trained before the strided look-around (an index_select, whose backward index_add sums
    a block's contributions by ascending offset) and after it must follow the same trajectory."""
    from colt5_lightning.layers.local_attention import _look_around
    blocks = torch.randn(2, 7, 32, 4, 8, requires_grad=True)
    grad = torch.randn(2, 7, 3 * 32, 4, 8)
    before, after = max(max(offsets), 0), max(-min(offsets), 0)
    padded = torch.nn.functional.pad(blocks.reshape(2, 7 * 32, -1), (0, 0, before * 32, after * 32))
    starts = torch.tensor([[(j + before - o) * 32 for o in offsets] for j in range(7)])
    index = (starts.unsqueeze(-1) + torch.arange(32)).reshape(-1)
    gathered = padded.index_select(1, index).view(2, 7, 3 * 32, 4, 8)
    want, = torch.autograd.grad(gathered, blocks, grad)
    got, = torch.autograd.grad(_look_around(blocks, offsets, 0.0), blocks, grad)
    assert torch.equal(got, want)


@pytest.mark.parametrize("offsets", [(2, 1, 0), (1, 0, -1), (0, -1, -2), (7, 6, 5), (-5, -6)])
def test_look_around_gradient_is_autograds(offsets):
    """(7, 6, 5) and (-5, -6) reach past all four blocks: every slot is fill, the gradient zero."""
    from colt5_lightning.layers.local_attention import _look_around
    blocks = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda b: _look_around(b, offsets, 0.0), (blocks,))


@pytest.mark.parametrize("causal, seen", [(False, (48, 80)), (True, (32, 64))], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("position", ["none", "relative"])
def test_the_light_window_reaches_as_far_as_colt5_attentions(causal, seen, position):
    """light_window_size 32: query 64 depends on inputs 48..80 (±16), or 32..64 when causal."""
    from colt5_lightning.layers.local_attention import LocalAttention
    attention = LocalAttention(16, heads=2, dim_head=8, window_size=32, causal=causal, position=position)
    x = torch.randn(1, 128, 16, requires_grad=True)
    attention(x)[0, 64].sum().backward()
    touched = (x.grad[0].abs().sum(-1) > 0).nonzero().flatten()
    assert (touched.min().item(), touched.max().item()) == seen
    assert len(touched) == seen[1] - seen[0] + 1


@pytest.mark.parametrize("kind", ("attn", "autoregressive"))
def test_rotary_emb_rotates_the_heavy_queries_and_keys_by_position(kind):
    torch.manual_seed(0)
    plain = build(kind).eval()
    rotary = build(kind, rotary_emb=True).eval()
    rotary.load_state_dict(plain.state_dict())  # the rotation has no parameters
    x = inputs(kind)
    assert not torch.allclose(plain(*x), rotary(*x))


def test_rotary_heavy_attention_stays_causal():
    torch.manual_seed(0)
    module = build("autoregressive", rotary_emb=True).eval()
    x = torch.randn(1, 64, DIM)
    changed = x.clone()
    changed[:, 40:] = torch.randn(1, 24, DIM)
    torch.testing.assert_close(module(x)[:, :40], module(changed)[:, :40])


def test_rotary_scores_depend_on_the_distance_only():
    from colt5_lightning.layers.rotary import RotaryEmbedding
    rotary = RotaryEmbedding(8)
    q, k = torch.randn(8), torch.randn(8)
    score = lambda i, j: (rotary.at(q, torch.tensor(float(i))) * rotary.at(k, torch.tensor(float(j)))).sum()  # noqa: E731
    torch.testing.assert_close(score(5, 2), score(103, 100))


# ---------------------------------------------------------------- FlexAttention light kernel


@pytest.mark.filterwarnings("ignore:.*flex_attention.*:UserWarning")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("position", ["none", "relative", "rotary"])
@pytest.mark.parametrize("masked", [False, True])
def test_the_flex_light_kernel_computes_the_blocked_kernels_window(causal, position, masked):
    """FlexAttention's block mask (the CUDA path) against the blocked SDPA kernel, forward on the
    CPU, where FlexAttention runs uncompiled (and has no backward)."""
    from colt5_lightning.layers.local_attention import LocalAttention
    torch.manual_seed(0)
    attention = LocalAttention(32, heads=2, dim_head=8, window_size=8, causal=causal, position=position)
    if position == "relative":
        torch.nn.init.normal_(attention.relative_bias.table, std=0.1)
    x = torch.randn(2, 37, 32)  # not a multiple of the block: the blocked kernel pads
    mask = torch.rand(2, 37) > 0.3 if masked else None
    with torch.no_grad():
        blocked = attention(x, mask)
        attention.kernel = "flex"
        torch.testing.assert_close(attention(x, mask), blocked, atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("causal", [False, True])
def test_on_cuda_the_light_branch_takes_flex_attention_with_the_blocked_kernels_outputs_and_gradients(causal):
    from colt5_lightning.layers.local_attention import LocalAttention
    torch.manual_seed(0)
    attention = LocalAttention(64, heads=4, dim_head=16, window_size=128, causal=causal,
                               position="relative").cuda()
    torch.nn.init.normal_(attention.relative_bias.table, std=0.1)
    x = torch.randn(2, 1000, 64, device="cuda", requires_grad=True)
    mask = torch.rand(2, 1000, device="cuda") > 0.2
    outputs, grads = [], []
    for kernel in ("auto", "blocked"):
        attention.kernel = kernel
        out = attention(x, mask)
        (gx,) = torch.autograd.grad(out.square().sum(), x)
        outputs.append(out)
        grads.append(gx)
    torch.testing.assert_close(outputs[0], outputs[1], atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(grads[0], grads[1], atol=2e-3, rtol=2e-3)


# ---------------------------------------------------------------- key/values routed by the embeddings

@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_key_values_routed_by_the_embedding_ignore_the_hidden_state_when_choosing(causal):
    from colt5_lightning import ConditionalRoutedTransformerBlock
    block = ConditionalRoutedTransformerBlock(32, num_heavy_attn_tokens_q=8, num_heavy_attn_tokens_kv=8,
                                              num_heavy_ff_tokens=8, light_window_size=8, light_heads=2,
                                              light_dim_head=8, heavy_heads=2, heavy_dim_head=8, causal=causal,
                                              kv_routed_by="embedding").eval()
    chosen = []
    block.attn.kv_router.register_forward_hook(lambda mod, args, out: chosen.append(out.indices))
    embedding = torch.randn(2, 40, 32)
    with torch.no_grad():
        block(torch.randn(2, 40, 32), route_input=embedding)
        block(torch.randn(2, 40, 32), route_input=embedding)
        block(torch.randn(2, 40, 32), route_input=torch.randn(2, 40, 32))
    assert torch.equal(chosen[0], chosen[1])
    assert not torch.equal(chosen[0], chosen[2])


def test_key_values_routed_by_the_embedding_need_the_embedding():
    from colt5_lightning import ConditionalRoutedAttention
    attn = ConditionalRoutedAttention(32, num_heavy_tokens_q=4, num_heavy_tokens_kv=4, light_window_size=8,
                                      light_heads=2, light_dim_head=8, heavy_heads=2, heavy_dim_head=8,
                                      kv_routed_by="embedding")
    with pytest.raises(ValueError, match="route_input"):
        attn(torch.randn(2, 16, 32))
    with pytest.raises(ValueError, match="score_input must have x's shape"):
        attn(torch.randn(2, 16, 32), route_input=torch.randn(2, 15, 32))


def image_attention(**kw):
    from colt5_lightning import ConditionalRoutedImageAttention
    return ConditionalRoutedImageAttention(32, num_heavy_tokens_q=8, num_heavy_tokens_kv=8, light_window_size=4,
                                           light_heads=2, light_dim_head=8, heavy_heads=2, heavy_dim_head=8, **kw)


@pytest.mark.parametrize("channel_first", [False, True], ids=["channel_last", "channel_first"])
def test_image_key_values_routed_by_the_embedding_ignore_the_hidden_state_when_choosing(channel_first):
    attn = image_attention(kv_routed_by="embedding", channel_first=channel_first).eval()
    chosen = []
    attn.kv_router.register_forward_hook(lambda mod, args, out: chosen.append(out.indices))
    shape = (2, 32, 8, 8) if channel_first else (2, 8, 8, 32)
    embedding = torch.randn(shape)
    with torch.no_grad():
        attn(torch.randn(shape), route_input=embedding)
        attn(torch.randn(shape), route_input=embedding)
        attn(torch.randn(shape), route_input=torch.randn(shape))
    assert torch.equal(chosen[0], chosen[1])
    assert not torch.equal(chosen[0], chosen[2])


def test_image_route_input_must_have_the_maps_shape():
    attn = image_attention(kv_routed_by="embedding")
    with pytest.raises(ValueError, match="route_input"):
        attn(torch.randn(2, 8, 8, 32))
    with pytest.raises(ValueError, match=r"route_input must have x's shape \(2, 8, 8, 32\)"):
        attn(torch.randn(2, 8, 8, 32), route_input=torch.randn(2, 8, 4, 32))


def test_image_attention_with_every_pixel_a_heavy_query_has_no_query_router_and_reaches_every_pixel():
    attn = image_attention(heavy_queries="all").eval()
    assert attn.q_router is None
    x = torch.randn(2, 8, 8, 32)
    with torch.no_grad():
        heavy = attn(x) - attn._light(attn.norm(x), None)
    assert (heavy.abs().amax(-1) > 0).all()


@pytest.mark.parametrize("setting", [{"heavy_queries": "all"}, {"kv_routed_by": "embedding"},
                                     {"heavy_queries": "all", "kv_routed_by": "embedding"}])
def test_image_classifier_with_the_passkey_routing_settings_trains_every_parameter(setting):
    from colt5_lightning.models import CoLT5ImageClassifier
    from colt5_lightning.models.config import RoutingConfig
    routing = RoutingConfig(light_window_size=4, light_heads=2, light_dim_head=8, heavy_heads=2, heavy_dim_head=8,
                            num_heavy_attn_tokens_q=8, num_heavy_attn_tokens_kv=8, num_heavy_ff_tokens=8,
                            **setting)
    model = CoLT5ImageClassifier(image_size=8, in_channels=3, num_classes=2, dim=32, depth=2, routing=routing)
    model(torch.randn(2, 3, 8, 8)).logsumexp(-1).sum().backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []
