"""Causal routed modules never let position t see an input after t, including through the choice
of which tokens are routed, in training and in eval mode, for every router type."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from colt5_lightning import (
    ConditionalRoutedAutoregressiveAttention,
    ConditionalRoutedFeedForward,
    ConditionalRoutedTransformerBlock,
)
from colt5_lightning.routing import ROUTER_TYPES

DIM, WIN, N = 32, 16, 64  # light blocks and causal segments of WIN / 2 = 8: eight segments
SEGMENT = WIN // 2
ATTN = dict(light_dim_head=16, light_heads=2, light_window_size=WIN, heavy_dim_head=16, heavy_heads=4)
MODULES = ("autoregressive_attention", "two_causal_blocks", "causal_feedforward")
# the same attention modules with every position a heavy query (heavy_queries="all")
ALL_QUERIES = ("autoregressive_attention+all_queries", "two_causal_blocks+all_queries")


class TwoBlocks(torch.nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            ConditionalRoutedTransformerBlock(DIM, num_heavy_attn_tokens_q=16, num_heavy_attn_tokens_kv=16,
                                              num_heavy_ff_tokens=16, causal=True, **ATTN, **kw)
            for _ in range(2))

    def forward(self, x, mask=None):
        for block in self.blocks:
            x = block(x, mask=mask)
        return x


def build(name, router_type, **kw):
    if name.endswith("+all_queries"):
        name, kw = name.split("+")[0], {**kw, "heavy_queries": "all"}
    if name == "autoregressive_attention":
        return ConditionalRoutedAutoregressiveAttention(DIM, num_heavy_tokens_q=16, num_heavy_tokens_kv=16,
                                                        router_type=router_type, **ATTN, **kw)
    if name == "two_causal_blocks":
        return TwoBlocks(router_type=router_type, **kw)
    return ConditionalRoutedFeedForward(DIM, num_heavy_tokens=16, causal=True, causal_segment_size=WIN,
                                        router_type=router_type, **kw)


def query_routers(module):
    """The causal query and feed-forward routers of a module (key/value routers may route segment 0)."""
    return [m for m in module.modules() if type(m).__name__ == "CausalRouter" and not m.route_first_segment]


def assert_no_leak(module, x, t, mask=None):
    """Perturbing inputs after t leaves outputs up to t unchanged, and changes some after t."""
    with torch.no_grad():
        out = module(x, mask=mask)
        y = x.clone()
        y[:, t + 1:] = torch.randn_like(y[:, t + 1:]) * 2
        out_perturbed = module(y, mask=mask)
    torch.testing.assert_close(out_perturbed[:, : t + 1], out[:, : t + 1], atol=1e-5, rtol=0,
                               msg=lambda m: f"position <= {t} saw the future:\n{m}")
    assert not torch.allclose(out_perturbed[:, t + 1:], out[:, t + 1:]), "perturbation had no effect at all"


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "padded"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("router_type", ROUTER_TYPES)
@pytest.mark.parametrize("name", MODULES + ALL_QUERIES)
def test_outputs_up_to_t_ignore_inputs_after_t(name, router_type, training, masked):
    module = build(name, router_type).train(training)
    x = torch.randn(2, N, DIM)
    mask = None
    if masked:
        mask = torch.ones(2, N, dtype=torch.bool)
        mask[1, 50:] = False
    for t in (0, 7, 15, 16, 31, 40, 62):
        assert_no_leak(module, x, t, mask)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), t=st.integers(0, N - 2), name=st.sampled_from(MODULES + ALL_QUERIES),
       router_type=st.sampled_from(ROUTER_TYPES), training=st.booleans(), straight_through=st.booleans(),
       num_routed_kv=st.sampled_from([1, 2]))
def test_no_leak_for_any_t_and_flags(seed, t, name, router_type, training, straight_through, num_routed_kv):
    torch.manual_seed(seed)
    kw = dict(router_straight_through=straight_through)
    if name != "causal_feedforward":
        kw["num_routed_kv"] = num_routed_kv
    module = build(name, router_type, **kw).train(training)
    assert_no_leak(module, torch.randn(2, N, DIM), t)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", MODULES)
def test_the_heavy_branch_routes_tokens_from_the_second_segment_on(name, training):
    module = build(name, "coor_descent").train(training)
    seen = []
    for router in query_routers(module):
        router.register_forward_hook(lambda mod, args, out: seen.append((mod.segment_size, out)))
    with torch.no_grad():
        module(torch.randn(2, N, DIM))
    assert seen
    for segment_size, routing in seen:
        routed = torch.zeros(2, N, dtype=torch.long).scatter_add(1, routing.indices[:, 0],
                                                                 routing.routed_mask[:, 0].long())
        per_segment = routed.view(2, N // segment_size, segment_size).sum(-1)
        assert (per_segment[:, 0] == 0).all()   # the first segment has no past to be routed by
        assert (per_segment[:, 1:].sum(-1) > 0).all()
        assert (routing.weights[routing.routed_mask] > 0).any()


def test_the_heavy_branch_changes_the_output_of_routed_positions():
    module = build("autoregressive_attention", "coor_descent").eval()
    x = torch.randn(2, N, DIM)
    with torch.no_grad():
        full = module(x)
        for p in module.heavy.parameters():
            p.zero_()
        light_only = module(x)
    assert not torch.allclose(full[:, SEGMENT:], light_only[:, SEGMENT:])
    torch.testing.assert_close(full[:, :SEGMENT], light_only[:, :SEGMENT])  # nothing routed in segment 0


def test_with_all_queries_every_position_after_the_first_segment_reads_the_routed_key_values():
    module = build("autoregressive_attention+all_queries", "coor_descent", heavy_window_size=0).eval()
    assert module.q_router is None
    x = torch.randn(2, N, DIM)
    with torch.no_grad():
        full = module(x)
        module.heavy.kv_weight.zero_()  # routed key/values say nothing; the null key/value remains
        null_only = module(x)
    changed = (full - null_only).abs().amax(-1) > 0  # (b, n)
    assert changed[:, SEGMENT:].all()
    assert not changed[:, :SEGMENT].any()  # key/values routed in segment 0 are shown to later segments only


@pytest.mark.parametrize("heavy_queries, kv_routed_by", [("routed", "hidden"), ("all", "hidden"),
                                                          ("all", "embedding")])
@pytest.mark.parametrize("router_type", ["coor_descent", "sinkhorn", "cum_softmax"])
def test_language_model_prefix_gives_the_same_logits_as_the_full_sequence(router_type, heavy_queries,
                                                                          kv_routed_by):
    from colt5_lightning.models import CoLT5LanguageModel, RoutingConfig
    routing = RoutingConfig(light_heads=2, heavy_heads=2, light_dim_head=16, heavy_dim_head=16, light_window_size=8,
                            num_heavy_attn_tokens_q=16, num_heavy_attn_tokens_kv=16, num_heavy_ff_tokens=16,
                            router_type=router_type, heavy_queries=heavy_queries, kv_routed_by=kv_routed_by)
    model = CoLT5LanguageModel(vocab_size=32, max_seq_len=64, dim=32, depth=2, routing=routing).eval()
    ids = torch.randint(0, 32, (2, 64))
    full = model(ids)
    for t in (9, 23, 40, 63):
        torch.testing.assert_close(model(ids[:, :t]), full[:, :t], atol=1e-5, rtol=0)


def test_causal_router_routes_nothing_after_an_all_padding_segment():
    from colt5_lightning.routing.causal import CausalRouter
    router = CausalRouter(8, segment_size=4).eval()
    x = torch.randn(1, 12, 8)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[:, :4] = False  # left padding fills segment 0
    routing = router(x, num_tokens=3, mask=mask)
    segment = routing.indices[0, 0] // 4
    assert not routing.routed_mask[0, 0][segment == 1].any()


@pytest.mark.parametrize("router_type", ["sinkhorn", "cum_softmax"])
def test_a_router_type_causal_routing_ignores_is_warned_about(router_type):
    from colt5_lightning.routing.causal import CausalRouter
    with pytest.warns(UserWarning, match=f"router_type='{router_type}' has no effect on causal routing"):
        CausalRouter(8, segment_size=4, router_type=router_type)


@pytest.mark.parametrize("heavy_window_size", [None, 24, 0])
def test_a_routed_query_sees_the_key_values_of_earlier_heavy_windows_only(heavy_window_size):
    """heavy_window_size (colt5-attention's; None means light_window_size): with every token routed
    by hand and no light attention, the output at t depends on no other input of t's window;
    0 lets it see every earlier routed token."""
    torch.manual_seed(0)
    module = ConditionalRoutedAutoregressiveAttention(DIM, num_heavy_tokens_q=N, num_heavy_tokens_kv=N,
                                                      has_light_attn=False, heavy_window_size=heavy_window_size,
                                                      max_seq_len=N, **ATTN).eval()
    for router in (module.q_router, module.kv_router):
        router.forced = torch.ones(1, N, dtype=torch.bool)
    x = torch.randn(1, N, DIM, requires_grad=True)
    t = 53
    module(x)[0, t].sum().backward()
    reach = x.grad[0].abs().sum(-1) > 0
    window = WIN if heavy_window_size is None else heavy_window_size
    if window == 0:
        assert reach[:t].all()  # every earlier routed key/value, those of segment 0 included
        return
    start = t // window * window
    assert not reach[start:t].any()  # nothing of its own window but itself
    assert reach[:start].all()
