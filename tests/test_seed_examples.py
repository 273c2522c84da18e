"""Every example of the colt5-attention README, imported from colt5_lightning, at reduced sizes
(2×1024×64 instead of 2×32768×512, routed counts scaled down by the same 32, the cross-attention
memory 20k tokens on CPU instead of 1e6 on CUDA), with the shapes the README promises."""
import pytest
import torch

import colt5_lightning
from colt5_lightning import (
    ConditionalRoutedAttention,
    ConditionalRoutedCrossAttention,
    ConditionalRoutedFeedForward,
    ConditionalRoutedTransformerBlock,
)

B, N, DIM = 2, 1024, 64


@pytest.fixture
def tokens():
    return torch.randn(B, N, DIM)


@pytest.fixture
def mask():
    return torch.ones(B, N).bool()  # can handle variable lengthed sequences


def test_the_seed_public_names_are_exported():
    for name in ("ConditionalRoutedFeedForward", "ConditionalRoutedAttention", "ConditionalRoutedTransformerBlock",
                 "ConditionalRoutedCrossAttention"):
        assert name in colt5_lightning.__all__ and hasattr(colt5_lightning, name)


def test_feedforward_example(tokens, mask):
    ff = ConditionalRoutedFeedForward(
        dim=DIM,
        light_ff_mult=0.5,      # hidden dimension ratio of light branch
        heavy_ff_mult=4,        # hidden dimension ratio of heavy branch
        num_heavy_tokens=32,    # heavy branch receives only 32 routed tokens of 1024
    )
    ff_out = ff(tokens, mask=mask)
    assert ff_out.shape == (B, N, DIM)  # light and heavy branch summed


def test_attention_example(tokens, mask):
    attn = ConditionalRoutedAttention(
        dim=DIM,
        light_dim_head=16,        # attention head dimension of light branch
        light_heads=4,            # number of attention heads for light branch
        light_window_size=32,     # local attention receptive field for light
        heavy_dim_head=16,        # attention head dimension of heavy branch
        heavy_heads=4,            # number of attention heads for heavy branch
        num_heavy_tokens_q=32,    # heavy branch receives only 32 routed tokens of 1024
        num_heavy_tokens_kv=32,   # heavy branch receives only 32 routed tokens of 1024
    )
    attn_out = attn(tokens, mask=mask)
    assert attn_out.shape == (B, N, DIM)


@pytest.mark.parametrize("router_type", ["coor_descent", "sinkhorn", "cum_softmax"])
def test_transformer_block_example(tokens, mask, router_type):
    block = ConditionalRoutedTransformerBlock(
        dim=DIM,
        light_dim_head=16,
        light_heads=4,
        light_window_size=32,
        heavy_dim_head=16,
        heavy_heads=4,
        light_ff_mult=0.5,
        heavy_ff_mult=4,
        num_heavy_ff_tokens=32,
        num_heavy_attn_tokens_q=32,
        num_heavy_attn_tokens_kv=32,
        router_type=router_type,  # coordinate descent, as in the paper, or 'sinkhorn' or 'cum_softmax'
    )
    block_out = block(tokens, mask=mask)
    assert block_out.shape == (B, N, DIM)


def test_cross_attention_example():
    # a transformer of 1024 length attending to 20k context past memories (1e6 in the README)
    tokens = torch.randn(B, 1024, DIM)
    tokens_mask = torch.ones(B, 1024).bool()
    memories = torch.randn(B, 20_000, DIM)
    memories_mask = torch.ones(B, 20_000).bool()

    cross_attn = ConditionalRoutedCrossAttention(
        dim=DIM,
        dim_head=16,
        heads=8,
        num_tokens_q=512,       # only 512 routed from 1024
        num_tokens_kv=1024,     # only 1024 routed from 20k
        kv_routing_tokens=2,    # 2 routing tokens route different sets of key / values: 4 heads each (8 / 2)
    )
    cross_attn_out = cross_attn(tokens, context=memories, mask=tokens_mask, context_mask=memories_mask)
    assert cross_attn_out.shape == (B, 1024, DIM)  # same as tokens


def test_variable_length_sequences_as_the_readme_promises(tokens):
    lengths = torch.tensor([N, 700])
    mask = torch.arange(N) < lengths.unsqueeze(1)
    block = ConditionalRoutedTransformerBlock(dim=DIM, light_dim_head=16, light_heads=4, light_window_size=32,
                                              heavy_dim_head=16, heavy_heads=4, num_heavy_ff_tokens=32,
                                              num_heavy_attn_tokens_q=32, num_heavy_attn_tokens_kv=32)
    out = block(tokens, mask=mask)
    assert out.shape == (B, N, DIM) and torch.isfinite(out).all()


@pytest.mark.parametrize("make, call", [
    (lambda **kw: ConditionalRoutedFeedForward(16, num_heavy_tokens=4, **kw), lambda m, x: m(x)),
    (lambda **kw: ConditionalRoutedAttention(16, num_heavy_tokens_q=4, num_heavy_tokens_kv=4, light_dim_head=8,
                                             light_heads=2, light_window_size=8, heavy_dim_head=8, heavy_heads=2,
                                             use_flash_attn=True, **kw), lambda m, x: m(x)),
    (lambda **kw: ConditionalRoutedTransformerBlock(16, num_heavy_attn_tokens_q=4, num_heavy_attn_tokens_kv=4,
                                                    num_heavy_ff_tokens=4, light_dim_head=8, light_heads=2,
                                                    light_window_size=8, heavy_dim_head=8, heavy_heads=2,
                                                    use_flash_attn=True, **kw), lambda m, x: m(x)),
    (lambda **kw: ConditionalRoutedCrossAttention(16, num_tokens_q=4, num_tokens_kv=4, dim_head=8, heads=2,
                                                  use_flash_attn=True, **kw), lambda m, x: m(x, x)),
], ids=["feedforward", "attention", "block", "cross"])
def test_the_reference_kernel_switches_are_accepted_and_change_nothing(make, call):
    torch.manual_seed(0)
    plain = make().eval()
    switched = make(use_triton=True).eval()
    switched.load_state_dict(plain.state_dict())
    x = torch.randn(2, 16, 16)
    torch.testing.assert_close(call(switched, x), call(plain, x))
