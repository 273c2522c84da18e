"""ConditionalRoutedViT: colt5-attention's routed vision transformer, with its arguments.

patches -> LayerNorm, linear, LayerNorm -> + fixed 2-D sin/cos positions -> depth × (routed image
attention over the patch map, routed feed-forward over the flattened map, each residual) ->
mean over patches -> LayerNorm -> linear head. Routers take `router_kwargs`, with coordinate
descent's eps defaulting to `default_coor_descent_eps` (1.0: images sit closer to speech than
to text). `router_use_triton` and `flash_attn` are accepted; the fast paths are always taken.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .. import _checks
from ..layers import ConditionalRoutedFeedForward, ConditionalRoutedImageAttention


def _pair(value: Union[int, Tuple[int, int]], name: str) -> Tuple[int, int]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a (height, width) pair, got {value!r}")
    return tuple(_checks.positive_int(name, v) for v in pair)


def sincos_positions_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """(h, w, dim) fixed positions: sin and cos of the column, then of the row, at dim/4
    geometrically spaced frequencies each."""
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4 for 2-D sin/cos positions, got {dim}")
    quarter = dim // 4
    freqs = temperature ** -(torch.arange(quarter, dtype=torch.float32) / max(1, quarter - 1))
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
    col_angles, row_angles = cols[..., None] * freqs, rows[..., None] * freqs
    return torch.cat((col_angles.sin(), col_angles.cos(), row_angles.sin(), row_angles.cos()), dim=-1)


class ConditionalRoutedViT(nn.Module):
    """images (b, channels, H, W) -> logits (b, num_classes)."""

    def __init__(self, *, image_size: Union[int, Tuple[int, int]], patch_size: Union[int, Tuple[int, int]],
                 num_classes: int, dim: int, depth: int, attn_num_heavy_tokens_q: int,
                 attn_num_heavy_tokens_kv: int, attn_heavy_dim_head: int, attn_heavy_heads: int,
                 attn_light_dim_head: int, attn_light_heads: int, attn_light_window_size: int,
                 ff_num_heavy_tokens: int, ff_heavy_mult: float, ff_light_mult: float, channels: int = 3,
                 router_straight_through: bool = True, router_kwargs: Optional[dict] = None,
                 router_use_triton: bool = False, flash_attn: bool = True, attn_num_routed_kv: int = 1,
                 default_coor_descent_eps: float = 1.0):
        super().__init__()
        (image_h, image_w), (patch_h, patch_w) = _pair(image_size, "image_size"), _pair(patch_size, "patch_size")
        if image_h % patch_h or image_w % patch_w:
            raise ValueError(f"image_size {(image_h, image_w)} must be divisible by patch_size {(patch_h, patch_w)}")
        self.channels = _checks.positive_int("channels", channels)
        self.image_size, self.patch_size = (image_h, image_w), (patch_h, patch_w)
        self.grid = (image_h // patch_h, image_w // patch_w)
        _checks.positive_int("depth", depth)
        patch_dim = channels * patch_h * patch_w
        self.patch_embedding = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim))
        self.register_buffer("positions", sincos_positions_2d(*self.grid, dim), persistent=False)
        routers = dict(router_straight_through=router_straight_through,
                       router_kwargs={"eps": default_coor_descent_eps, **(router_kwargs or {})})
        self.layers = nn.ModuleList(nn.ModuleList([
            ConditionalRoutedImageAttention(
                dim, num_heavy_tokens_q=attn_num_heavy_tokens_q, num_heavy_tokens_kv=attn_num_heavy_tokens_kv,
                num_routed_kv=attn_num_routed_kv, light_dim_head=attn_light_dim_head, light_heads=attn_light_heads,
                light_window_size=attn_light_window_size, heavy_dim_head=attn_heavy_dim_head,
                heavy_heads=attn_heavy_heads, use_null_q_tokens=True, **routers),
            ConditionalRoutedFeedForward(dim, num_heavy_tokens=ff_num_heavy_tokens, light_ff_mult=ff_light_mult,
                                         heavy_ff_mult=ff_heavy_mult, **routers),
        ]) for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, _checks.positive_int("num_classes", num_classes)))

    def patches(self, images: Tensor) -> Tensor:
        """(b, c, H, W) -> (b, H/ph, W/pw, c·ph·pw), each patch's pixels row by row, channels last."""
        b, c, _, _ = images.shape
        (gh, gw), (ph, pw) = self.grid, self.patch_size
        x = images.view(b, c, gh, ph, gw, pw).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, gh, gw, ph * pw * c)

    def forward(self, images: Tensor) -> Tensor:
        expected = (self.channels, *self.image_size)
        if not isinstance(images, Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must have shape (batch, {', '.join(map(str, expected))}), got "
                             f"{tuple(getattr(images, 'shape', ()))}")
        x = self.patch_embedding(self.patches(images)) + self.positions.to(images.dtype)
        b, h, w, d = x.shape
        for attn, ff in self.layers:
            x = x + attn(x)
            flat = x.reshape(b, h * w, d)
            x = (flat + ff(flat)).view(b, h, w, d)
        return self.head(x.mean(dim=(1, 2)))
