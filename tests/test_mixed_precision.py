"""bf16 autocast on CPU: every routed module runs forward and backward, with finite gradients,
the promised shape and routing math kept in float32."""
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
from colt5_lightning.routing import ROUTER_TYPES

DIM, WIN, K = 32, 16, 16
ATTN = dict(light_dim_head=16, light_heads=2, light_window_size=WIN, heavy_dim_head=16, heavy_heads=4,
            num_routed_kv=2)
BUILDERS = {
    "ff": lambda rt: ConditionalRoutedFeedForward(DIM, num_heavy_tokens=K, router_type=rt),
    "causal_ff": lambda rt: ConditionalRoutedFeedForward(DIM, num_heavy_tokens=K, router_type=rt, causal=True,
                                                         causal_segment_size=WIN),
    "attn": lambda rt: ConditionalRoutedAttention(DIM, num_heavy_tokens_q=K, num_heavy_tokens_kv=K,
                                                  router_type=rt, **ATTN),
    "autoregressive": lambda rt: ConditionalRoutedAutoregressiveAttention(
        DIM, num_heavy_tokens_q=K, num_heavy_tokens_kv=K, router_type=rt, **ATTN),
    "image": lambda rt: ConditionalRoutedImageAttention(DIM, num_heavy_tokens_q=K, num_heavy_tokens_kv=K,
                                                        router_type=rt, **{**ATTN, "light_window_size": 4}),
    "cross": lambda rt: ConditionalRoutedCrossAttention(DIM, num_tokens_q=K, num_tokens_kv=K, dim_head=16, heads=4,
                                                        kv_routing_tokens=2, router_type=rt),
    "block": lambda rt: ConditionalRoutedTransformerBlock(DIM, num_heavy_attn_tokens_q=K, num_heavy_attn_tokens_kv=K,
                                                          num_heavy_ff_tokens=K, router_type=rt, **ATTN),
    "causal_block": lambda rt: ConditionalRoutedTransformerBlock(
        DIM, num_heavy_attn_tokens_q=K, num_heavy_attn_tokens_kv=K, num_heavy_ff_tokens=K, router_type=rt,
        causal=True, **ATTN),
}


def call(kind, module, x, mask, context=None):
    if kind == "cross":
        return module(x, context, mask=mask, context_mask=torch.ones(context.shape[:2], dtype=torch.bool, device=context.device))
    if kind == "image":
        return module(x.view(2, 8, 8, DIM), mask=mask.view(2, 8, 8)).view(2, 64, DIM)
    return module(x, mask=mask)


@pytest.mark.parametrize("router_type", ROUTER_TYPES)
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_bf16_autocast_forward_and_backward(kind, router_type):
    module = BUILDERS[kind](router_type).train()
    x = torch.randn(2, 64, DIM, requires_grad=True)
    context = torch.randn(2, 100, DIM)
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[1, 56:] = False
    routings = []
    for m in module.modules():
        if type(m).__name__ in ("Router", "CausalRouter"):
            m.register_forward_hook(lambda mod, args, out: routings.append(out))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = call(kind, module, x, mask, context)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name
    assert routings
    for routing in routings:
        assert routing.scores.dtype == routing.weights.dtype == torch.float32

    with torch.no_grad():  # bf16 is close to float32 where the routing agrees: compare loosely
        reference = call(kind, module, x, mask, context)
    cos = torch.nn.functional.cosine_similarity(out.float().flatten(), reference.flatten(), dim=0)
    assert cos > 0.95


@pytest.mark.parametrize("router_type", ROUTER_TYPES)
def test_bf16_parameters_without_autocast(router_type):
    """A module cast to bf16 as a whole (no autocast) still routes in float32 and runs."""
    module = BUILDERS["block"](router_type).to(torch.bfloat16)
    x = torch.randn(2, 64, DIM, dtype=torch.bfloat16, requires_grad=True)
    out = module(x)
    assert out.shape == x.shape and out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("router_type", ROUTER_TYPES)
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_cuda_autocast_forward_and_backward(kind, router_type, dtype):
    module = BUILDERS[kind](router_type).cuda().train()
    x = torch.randn(2, 64, DIM, device="cuda", requires_grad=True)
    context = torch.randn(2, 100, DIM, device="cuda")
    mask = torch.ones(2, 64, dtype=torch.bool, device="cuda")
    mask[1, 56:] = False
    with torch.autocast("cuda", dtype=dtype):
        out = call(kind, module, x, mask, context)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
