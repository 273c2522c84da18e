"""CoLT5ImageClassifier: a routed vision transformer over a patch feature map.

conv patch stem -> + learned 2-D positions -> N × (routed image attention, routed FF) -> LayerNorm
-> mean over patches -> linear head. The light attention works in light_window_size ×
light_window_size tiles of the map, the heavy branch over routed patches of the whole map;
the feed-forward routes over the flattened map. `dense=True` uses dense pre-norm blocks of the
same width and depth over the flattened map instead.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .. import _checks
from .routing_args import routing_args
from ..layers import ConditionalRoutedFeedForward, ConditionalRoutedImageAttention, DenseTransformerBlock


class RoutedImageBlock(nn.Module):
    """x (b, h, w, dim) -> (b, h, w, dim): x + attn(x), then + ff(x) on the flattened map."""

    def __init__(self, dim: int, *, num_heavy_attn_tokens_q: int, num_heavy_attn_tokens_kv: int,
                 num_heavy_ff_tokens: int, light_dim_head: int, light_heads: int, light_window_size: int,
                 heavy_dim_head: int, heavy_heads: int, light_ff_mult: float, heavy_ff_mult: float,
                 num_routed_kv: int, router_straight_through: bool, router_type: str,
                 router_kwargs: Optional[dict], kv_scaling: str, heavy: bool):
        super().__init__()
        routing = dict(router_straight_through=router_straight_through, router_type=router_type,
                       router_kwargs=router_kwargs)
        self.attn = ConditionalRoutedImageAttention(
            dim, num_heavy_tokens_q=num_heavy_attn_tokens_q, num_heavy_tokens_kv=num_heavy_attn_tokens_kv,
            num_routed_kv=num_routed_kv, light_dim_head=light_dim_head, light_heads=light_heads,
            light_window_size=light_window_size, heavy_dim_head=heavy_dim_head, heavy_heads=heavy_heads,
            kv_scaling=kv_scaling, heavy=heavy, **routing)
        self.ff = ConditionalRoutedFeedForward(dim, num_heavy_tokens=num_heavy_ff_tokens,
                                               light_ff_mult=light_ff_mult, heavy_ff_mult=heavy_ff_mult,
                                               heavy=heavy, **routing)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, d = x.shape
        x = x + self.attn(x)
        x = x.reshape(b, h * w, d)
        x = x + self.ff(x)
        return x.view(b, h, w, d)


class CoLT5ImageClassifier(nn.Module):
    """images (b, in_channels, image_size, image_size) float -> logits (b, num_classes)."""

    def __init__(self, image_size: int = 32, in_channels: int = 1, num_classes: int = 2, patch_size: int = 1,
                 dim: int = 128, depth: int = 4, *, num_heavy_attn_tokens_q: int = 64,
                 num_heavy_attn_tokens_kv: int = 64, num_heavy_ff_tokens: int = 64, light_dim_head: int = 32,
                 light_heads: int = 4, light_window_size: int = 8, heavy_dim_head: int = 32,
                 heavy_heads: int = 4, light_ff_mult: float = 0.5, heavy_ff_mult: float = 4.0,
                 num_routed_kv: int = 1, router_straight_through: bool = False,
                 router_type: str = "coor_descent", router_kwargs: Optional[dict] = None,
                 kv_scaling: str = "inputs", heavy: bool = True, dense: bool = False):
        super().__init__()
        self.image_size = _checks.positive_int("image_size", image_size)
        self.in_channels = _checks.positive_int("in_channels", in_channels)
        self.num_classes = _checks.positive_int("num_classes", num_classes)
        self.patch_size = _checks.positive_int("patch_size", patch_size)
        _checks.positive_int("dim", dim)
        _checks.positive_int("depth", depth)
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size})")
        side = image_size // patch_size
        self.side = side
        self.dense = bool(dense)
        if not dense and side % _checks.positive_int("light_window_size", light_window_size):
            raise ValueError(f"the feature map side image_size / patch_size = {side} must be divisible by "
                             f"light_window_size ({light_window_size})")
        self.stem = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_emb = nn.Parameter(torch.randn(side, side, dim) * 0.02)
        if dense:
            self.blocks = nn.ModuleList(DenseTransformerBlock(dim, heads=heavy_heads, dim_head=heavy_dim_head,
                                                              ff_mult=heavy_ff_mult) for _ in range(depth))
        else:
            routing = routing_args(locals())
            self.blocks = nn.ModuleList(RoutedImageBlock(dim, **routing) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        expected = (self.in_channels, self.image_size, self.image_size)
        if not isinstance(images, Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must have shape (batch, {', '.join(map(str, expected))}), got "
                             f"{tuple(getattr(images, 'shape', ()))}")
        if not images.dtype.is_floating_point:
            raise ValueError(f"images must be a floating-point tensor, got {images.dtype}")
        x = self.stem(images).permute(0, 2, 3, 1) + self.pos_emb  # (b, side, side, dim)
        b, h, w, d = x.shape
        for block in self.blocks:
            x = block(x.reshape(b, h * w, d)).view(b, h, w, d) if self.dense else block(x)
        return self.head(self.norm(x).mean(dim=(1, 2)))
