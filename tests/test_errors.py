"""Every bad input raises ValueError or TypeError with a message that names the argument."""
import pytest
import torch

from colt5_lightning import (
    ConditionalRoutedAttention,
    ConditionalRoutedAutoregressiveAttention,
    ConditionalRoutedCrossAttention,
    ConditionalRoutedFeedForward,
    ConditionalRoutedImageAttention,
    ConditionalRoutedTransformerBlock,
    Router,
)
from colt5_lightning.routing import coor_descent, cum_softmax_topk, sinkhorn_topk

DIM = 32
SMALL = dict(light_dim_head=8, light_heads=2, light_window_size=8, heavy_dim_head=8, heavy_heads=4)


def ff(**kw):
    return ConditionalRoutedFeedForward(DIM, **{"num_heavy_tokens": 4, **kw})


def attn(**kw):
    return ConditionalRoutedAttention(DIM, **{"num_heavy_tokens_q": 4, "num_heavy_tokens_kv": 4, **SMALL, **kw})


def autoregressive(**kw):
    return ConditionalRoutedAutoregressiveAttention(
        DIM, **{"num_heavy_tokens_q": 4, "num_heavy_tokens_kv": 4, **SMALL, **kw})


def image(**kw):
    return ConditionalRoutedImageAttention(DIM, **{"num_heavy_tokens_q": 4, "num_heavy_tokens_kv": 4,
                                                   **SMALL, "light_window_size": 4, **kw})


def cross(**kw):
    return ConditionalRoutedCrossAttention(DIM, **{"num_tokens_q": 4, "num_tokens_kv": 4, "dim_head": 8,
                                                   "heads": 4, **kw})


def block(**kw):
    return ConditionalRoutedTransformerBlock(DIM, **{"num_heavy_attn_tokens_q": 4, "num_heavy_attn_tokens_kv": 4,
                                                     "num_heavy_ff_tokens": 4, **SMALL, **kw})


SEQUENCE_MODULES = {"ff": ff, "causal_ff": lambda: ff(causal=True, causal_segment_size=8), "attn": attn,
                    "autoregressive": autoregressive, "block": block, "causal_block": lambda: block(causal=True)}
ALL_BUILDERS = {**SEQUENCE_MODULES, "image": image, "cross": cross}


def run(name, module, x, **kw):
    if name == "cross":
        return module(x, torch.randn(2, 12, DIM), **kw)
    return module(x, **kw)


# ---------------------------------------------------------------- bad x


BAD_X = [
    (torch.randn(16, DIM), ValueError, r"x must have shape \(batch, seq, dim\), got 2 dims"),
    (torch.randn(2, 3, 16, DIM), ValueError, r"x must have shape"),
    (torch.randn(2, 16, DIM + 1), ValueError, rf"x must have feature size {DIM}.*got {DIM + 1}"),
    (torch.ones(2, 16, DIM, dtype=torch.long), TypeError, r"x must be a floating-point tensor"),
    ([[0.0] * DIM], TypeError, r"x must be a torch.Tensor"),
]


@pytest.mark.parametrize("x,error,match", BAD_X, ids=["rank-2", "rank-4", "width", "integer", "list"])
@pytest.mark.parametrize("name", sorted(set(ALL_BUILDERS) - {"image"}))
def test_bad_x_is_named(name, x, error, match):
    with pytest.raises(error, match=match):
        run(name, ALL_BUILDERS[name](), x)


@pytest.mark.parametrize("channel_first", [False, True])
def test_bad_image_is_named(channel_first):
    module = image(channel_first=channel_first)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, (height, width, dim|dim, height, width)\)"):
        module(torch.randn(2, 64, DIM))
    wrong_width = torch.randn(2, 8, 8, DIM + 1)
    expected = f"x must have {DIM} channels in dim 1" if channel_first else "x must have feature size"
    with pytest.raises(ValueError, match=expected):
        module(wrong_width.permute(0, 3, 1, 2) if channel_first else wrong_width)


@pytest.mark.parametrize("sides", [(6, 8), (8, 10), (3, 3)])
def test_image_sides_must_be_divisible_by_the_window(sides):
    with pytest.raises(ValueError, match=r"height and width .* divisible by light_window_size \(4\)"):
        image()(torch.randn(2, *sides, DIM))


# ---------------------------------------------------------------- bad masks


@pytest.mark.parametrize("name", sorted(ALL_BUILDERS))
def test_mask_of_the_wrong_shape_is_named(name):
    x = torch.randn(2, 8, 8, DIM) if name == "image" else torch.randn(2, 16, DIM)
    with pytest.raises(ValueError, match=r"mask must have shape \(2, (16|8, 8)\)"):
        run(name, ALL_BUILDERS[name](), x, mask=torch.ones(2, 15, dtype=torch.bool))


@pytest.mark.parametrize("name", sorted(ALL_BUILDERS))
@pytest.mark.parametrize("bad", [torch.ones, lambda *s: torch.ones(*s, dtype=torch.long)], ids=["float", "long"])
def test_non_bool_mask_is_named(name, bad):
    shape = (2, 8, 8) if name == "image" else (2, 16)
    x = torch.randn(*shape, DIM)
    with pytest.raises(TypeError, match=r"mask must be a bool tensor"):
        run(name, ALL_BUILDERS[name](), x, mask=bad(*shape))


def test_mask_that_is_not_a_tensor_is_named():
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        ff()(torch.randn(2, 16, DIM), mask=[[True] * 16] * 2)


def test_cross_attention_context_checks_name_the_argument():
    module = cross()
    x = torch.randn(2, 16, DIM)
    with pytest.raises(ValueError, match=rf"context must have feature size {DIM}.*got {DIM + 2}"):
        module(x, torch.randn(2, 12, DIM + 2))
    with pytest.raises(ValueError, match=r"context must have shape \(batch, context_len, dim_context\)"):
        module(x, torch.randn(12, DIM))
    with pytest.raises(ValueError, match="context batch size 3"):
        module(x, torch.randn(3, 12, DIM))
    with pytest.raises(ValueError, match=r"context_mask must have shape \(2, 12\)"):
        module(x, torch.randn(2, 12, DIM), context_mask=torch.ones(2, 16, dtype=torch.bool))
    with pytest.raises(TypeError, match="context_mask must be a bool tensor"):
        module(x, torch.randn(2, 12, DIM), context_mask=torch.ones(2, 12))
    with pytest.raises(ValueError, match="context must have feature size 48"):
        cross(dim_context=48)(x, torch.randn(2, 12, DIM))


# ---------------------------------------------------------------- bad construction


BAD_CONSTRUCTION = [
    (ff, dict(num_heavy_tokens=0), ValueError, "num_heavy_tokens must be a positive int"),
    (ff, dict(num_heavy_tokens=2.5), TypeError, "num_heavy_tokens must be a positive int"),
    (ff, dict(num_heavy_tokens=True), TypeError, "num_heavy_tokens"),
    (ff, dict(light_ff_mult=0), ValueError, "light_ff_mult"),
    (ff, dict(heavy_ff_mult=-1), ValueError, "heavy_ff_mult"),
    (ff, dict(causal=True, causal_segment_size=0), ValueError, "causal_segment_size"),
    (ff, dict(router_type="gumbel"), ValueError, r"router_type must be one of .*'gumbel'"),
    (ff, dict(router_kwargs=["n_iters"]), TypeError, "router_kwargs must be a dict"),
    (ff, dict(router_kwargs=dict(n_iters=0)), ValueError, "n_iters"),
    (attn, dict(num_heavy_tokens_q=0), ValueError, "num_heavy_tokens_q"),
    (attn, dict(num_heavy_tokens_kv=-3), ValueError, "num_heavy_tokens_kv"),
    (attn, dict(light_window_size=0), ValueError, "light_window_size"),
    (attn, dict(num_routed_kv=3), ValueError, r"heavy_heads \(4\) must be divisible by num_routed_kv \(3\)"),
    (attn, dict(num_routed_kv=0), ValueError, "num_routed_kv"),
    (attn, dict(kv_scaling="keys"), ValueError, "kv_scaling"),
    (attn, dict(router_type="sinkhorn_v2"), ValueError, "router_type"),
    (attn, dict(heavy_heads=0), ValueError, "heavy_heads"),
    (attn, dict(heavy_queries="some"), ValueError, r"heavy_queries must be one of .*'some'"),
    (autoregressive, dict(heavy_queries="none"), ValueError, "heavy_queries"),
    (attn, dict(kv_routed_by="position"), ValueError, r"kv_routed_by must be one of .*'position'"),
    (autoregressive, dict(kv_routed_by="input"), ValueError, "kv_routed_by"),
    (attn, dict(light_heads=0), ValueError, "light_heads"),
    (autoregressive, dict(heavy_segment_size=0), ValueError, "heavy_segment_size"),
    (autoregressive, dict(light_window_size=-1), ValueError, "light_window_size"),
    (autoregressive, dict(num_routed_kv=3), ValueError, "num_routed_kv"),
    (image, dict(light_window_size=0), ValueError, "light_window_size"),
    (image, dict(num_routed_kv=3), ValueError, "num_routed_kv"),
    (cross, dict(kv_routing_tokens=3), ValueError, r"heads \(4\) must be divisible by kv_routing_tokens \(3\)"),
    (cross, dict(kv_routing_tokens=0), ValueError, "kv_routing_tokens"),
    (cross, dict(num_tokens_q=0), ValueError, "num_tokens_q"),
    (cross, dict(num_tokens_kv=0), ValueError, "num_tokens_kv"),
    (cross, dict(router_type="topk"), ValueError, "router_type"),
    (block, dict(num_heavy_ff_tokens=0), ValueError, "num_heavy_ff_tokens|num_heavy_tokens"),
    (block, dict(num_heavy_attn_tokens_q=0), ValueError, "num_heavy_tokens_q"),
    (block, dict(num_routed_kv=3), ValueError, "num_routed_kv"),
    (block, dict(light_window_size=0), ValueError, "light_window_size"),
    (block, dict(causal=True, light_window_size=0), ValueError, "light_window_size"),
    (block, dict(router_type="nope"), ValueError, "router_type"),
]


@pytest.mark.parametrize("factory,kwargs,error,match", BAD_CONSTRUCTION,
                         ids=[f"{f.__name__}-{'-'.join(map(str, k))}" for f, k, _, _ in BAD_CONSTRUCTION])
def test_bad_construction_is_named(factory, kwargs, error, match):
    with pytest.raises(error, match=match):
        factory(**kwargs)


def test_router_construction_checks():
    with pytest.raises(ValueError, match="router_type"):
        Router(DIM, router_type="hard")
    with pytest.raises(ValueError, match="num_routing_tokens"):
        Router(DIM, num_routing_tokens=0)
    with pytest.raises(ValueError, match="over_fetch"):
        Router(DIM, over_fetch=0.5)
    with pytest.raises(ValueError, match="eps"):
        Router(DIM, eps=0.0)


# ---------------------------------------------------------------- bad per-call counts


BAD_COUNTS = [
    (0, ValueError, "must be a positive int"),
    (-2, ValueError, "must be a positive int"),
    (1.5, TypeError, "must be a positive int"),
    (torch.tensor([[2, 2]]), ValueError, r"as a tensor must have shape \(batch,\)"),
    (torch.tensor([2.0, 2.0]), TypeError, "as a tensor must hold integers"),
    (torch.tensor([2, -1]), ValueError, "must be non-negative"),
]


@pytest.mark.parametrize("count,error,match", BAD_COUNTS, ids=["zero", "negative", "float", "2d", "float-tensor",
                                                              "negative-tensor"])
def test_bad_per_call_counts_are_named(count, error, match):
    x = torch.randn(2, 16, DIM)
    with pytest.raises(error, match="num_heavy_tokens " + match):
        ff()(x, num_heavy_tokens=count)
    with pytest.raises(error, match="num_heavy_tokens_q " + match):
        attn()(x, num_heavy_tokens_q=count)
    with pytest.raises(error, match="num_heavy_tokens_kv " + match):
        attn()(x, num_heavy_tokens_kv=count)
    with pytest.raises(error, match="num_tokens_kv " + match):
        cross()(x, torch.randn(2, 12, DIM), num_tokens_kv=count)
    with pytest.raises(error, match="num_tokens " + match):
        Router(DIM)(x, num_tokens=count)


def test_per_sample_counts_must_match_the_batch():
    with pytest.raises(ValueError, match=r"k as a tensor must have shape \(2,\)"):
        Router(DIM)(torch.randn(2, 16, DIM), num_tokens=torch.tensor([2, 2, 2]))


def test_causal_modules_take_int_counts_only():
    x = torch.randn(2, 16, DIM)
    with pytest.raises(TypeError, match="num_tokens"):
        ff(causal=True, causal_segment_size=8)(x, num_heavy_tokens=torch.tensor([2, 2]))
    with pytest.raises(TypeError, match="num_heavy_tokens_kv must be an int"):
        autoregressive()(x, num_heavy_tokens_kv=torch.tensor([2, 2]))


# ---------------------------------------------------------------- the solvers


@pytest.mark.parametrize("solver", [lambda s, **kw: coor_descent(s, n_iters=5, eps=0.1, **kw), sinkhorn_topk,
                                    cum_softmax_topk], ids=["coor_descent", "sinkhorn", "cum_softmax"])
def test_solver_input_checks_name_the_argument(solver):
    with pytest.raises(TypeError, match="s must be a floating-point tensor"):
        solver(torch.ones(2, 8, dtype=torch.long), k=2)
    with pytest.raises(ValueError, match="k must be a positive finite number"):
        solver(torch.randn(2, 8), k=0)
    with pytest.raises(ValueError, match="k must be a positive finite number"):
        solver(torch.randn(2, 8), k=float("nan"))
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 8\)"):
        solver(torch.randn(2, 8), k=2, mask=torch.ones(2, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="k as a tensor"):
        solver(torch.randn(2, 8), k=torch.tensor([1, 2, 3]))


def test_solver_hyperparameters_are_checked():
    with pytest.raises(ValueError, match="n_iters"):
        coor_descent(torch.randn(8), k=2, n_iters=0, eps=0.1)
    with pytest.raises(ValueError, match="eps must be a positive number"):
        coor_descent(torch.randn(8), k=2, n_iters=5, eps=-1.0)
    with pytest.raises(ValueError, match="eps_init"):
        coor_descent(torch.randn(8), k=2, n_iters=5, eps=0.1, eps_init=0.0)
    with pytest.raises(ValueError, match="eps"):
        sinkhorn_topk(torch.randn(8), k=2, eps=0)
