"""The ablation switches: heavy=False (the light-only model) and light_position."""
from __future__ import annotations

import pytest
import torch

from colt5_lightning import ConditionalRoutedTransformerBlock
from colt5_lightning.layers.local_attention import LocalAttention
from colt5_lightning.layers.rotary import RotaryEmbedding
from colt5_lightning.models import CoLT5LanguageModel, RoutingConfig
from colt5_lightning.routing import Router
from colt5_lightning.routing.causal import CausalRouter

DIM, N = 16, 32
SIZES = dict(num_heavy_attn_tokens_q=8, num_heavy_attn_tokens_kv=8, num_heavy_ff_tokens=8, light_heads=2,
             light_dim_head=8, heavy_heads=2, heavy_dim_head=8, light_window_size=8)


def block(**kwargs):
    return ConditionalRoutedTransformerBlock(DIM, **SIZES, **kwargs)


@pytest.mark.parametrize("causal", [False, True])
def test_light_only_block_has_no_routers_and_no_heavy_weights(causal):
    light = block(causal=causal, heavy=False)
    assert not any(isinstance(m, (Router, CausalRouter)) for m in light.modules())
    assert sum(p.numel() for p in light.parameters()) < sum(p.numel() for p in block(causal=causal).parameters())


@pytest.mark.parametrize("causal", [False, True])
def test_light_only_block_is_the_light_branches_of_the_routed_block(causal):
    torch.manual_seed(0)
    routed = block(causal=causal)
    light = block(causal=causal, heavy=False)
    light.load_state_dict(routed.state_dict(), strict=False)
    x = torch.randn(2, N, DIM)
    h = x + routed.attn.light(routed.attn.norm(x))
    expected = h + routed.ff.light_ff(routed.ff.norm(h))
    torch.testing.assert_close(light(x), expected)


@pytest.mark.parametrize("heavy", [True, False])
@pytest.mark.parametrize("position", ["none", "rotary", "relative"])
@pytest.mark.parametrize("absolute", [True, False])
def test_language_model_stays_causal_for_every_light_position(heavy, position, absolute):
    torch.manual_seed(0)
    routing = RoutingConfig(heavy=heavy, light_position=position, **SIZES)
    model = CoLT5LanguageModel(vocab_size=32, max_seq_len=N, dim=DIM, depth=2, routing=routing,
                               absolute_positions=absolute).eval()
    ids = torch.randint(0, 32, (1, N))
    changed = ids.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 32
    torch.testing.assert_close(model(ids)[:, :20], model(changed)[:, :20])


def test_rotary_scores_depend_only_on_the_distance_between_query_and_key():
    rotary = RotaryEmbedding(8)
    q, k = torch.randn(1, 1, 1, 8).expand(1, 12, 1, 8), torch.randn(1, 1, 1, 8).expand(1, 12, 1, 8)
    rq, rk = rotary(q, k)
    scores = (rq[0, :, 0] @ rk[0, :, 0].T)  # (12, 12)
    for offset in (-3, 0, 2):
        diagonal = torch.diagonal(scores, offset)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal))


@pytest.mark.parametrize("causal", [False, True])
def test_relative_bias_lets_a_head_look_at_the_token_before(causal):
    """With zero projections but a large bias at offset -1, each query's output is its left
    neighbour's value: one parameter sets the distance a head attends to."""
    torch.manual_seed(0)
    attn = LocalAttention(DIM, heads=1, dim_head=DIM, window_size=8, causal=causal, position="relative")
    with torch.no_grad():
        attn.to_qkv.weight.zero_()
        attn.to_qkv.weight[2 * DIM:] = torch.eye(DIM)  # v = x, q = k = 0
        attn.to_out.weight.copy_(torch.eye(DIM))
        bias = attn.relative_bias
        bias.table[0, bias.reach_back - 1] = 50.0 / bias.scale  # offset -1: 50 logits
    x = torch.randn(1, N, DIM)
    torch.testing.assert_close(attn(x)[:, 1:], x[:, :-1], atol=1e-4, rtol=0)


def test_unknown_light_position_is_named():
    with pytest.raises(ValueError, match="light_position"):
        block(light_position="alibi")
