"""CoLT5ImageClassifier: a routed vision transformer over a patch feature map (its trunk,
PatchTransformer, is shared with the diffusion denoiser).

conv patch stem -> + learned 2-D positions -> N × (routed image attention, routed FF) -> LayerNorm
-> mean over patches (or the top-left patch: readout="corner") -> linear head. The light
attention works in light_window_size × light_window_size tiles of the map, the heavy branch over
routed patches of the whole map; the feed-forward routes over the flattened map. `dense=True`
uses dense pre-norm blocks of the same width and depth over the flattened map instead.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .. import _checks
from .config import RoutingConfig
from ..layers import ConditionalRoutedFeedForward, ConditionalRoutedImageAttention, DenseTransformerBlock


class RoutedImageBlock(nn.Module):
    """x (b, h, w, dim) -> (b, h, w, dim): x + attn(x), then + ff(x) on the flattened map.
    route_input (b, h, w, dim): the model's embeddings, which key/value routers built with
    kv_routed_by='embedding' score."""

    def __init__(self, dim: int, routing: Optional[RoutingConfig] = None):
        super().__init__()
        r = RoutingConfig.of(routing)
        if r.light_position != "none":
            raise ValueError(f"light_position {r.light_position!r} is not available for image feature maps: "
                             "their light attention works in 2-D tiles; positions come from the model's table "
                             "(use light_position: none)")
        common = dict(router_straight_through=r.router_straight_through, router_type=r.router_type,
                      router_kwargs=r.router_kwargs, heavy=r.heavy)
        self.attn = ConditionalRoutedImageAttention(
            dim, num_heavy_tokens_q=r.num_heavy_attn_tokens_q, num_heavy_tokens_kv=r.num_heavy_attn_tokens_kv,
            num_routed_kv=r.num_routed_kv, light_dim_head=r.light_dim_head, light_heads=r.light_heads,
            light_window_size=r.light_window_size, heavy_dim_head=r.heavy_dim_head, heavy_heads=r.heavy_heads,
            kv_scaling=r.kv_scaling, heavy_queries=r.heavy_queries, kv_routed_by=r.kv_routed_by, **common)
        self.ff = ConditionalRoutedFeedForward(dim, num_heavy_tokens=r.num_heavy_ff_tokens,
                                               light_ff_mult=r.light_ff_mult, heavy_ff_mult=r.heavy_ff_mult,
                                               **common)

    def forward(self, x: Tensor, route_input: Optional[Tensor] = None) -> Tensor:
        b, h, w, d = x.shape
        x = x + self.attn(x, route_input=route_input)
        x = x.reshape(b, h * w, d)
        x = x + self.ff(x)
        return x.view(b, h, w, d)


class PatchTransformer(nn.Module):
    """The trunk the image models share: images (b, in_channels, image_size, image_size) -> a
    conv patch stem, learned 2-D positions, `depth` routed (or dense) blocks and a LayerNorm,
    giving features (b, side, side, dim) with side = image_size / patch_size. `condition`
    (b, dim), when given, is added to every patch before each block (a diffusion step)."""

    def __init__(self, image_size: int, in_channels: int, patch_size: int, dim: int, depth: int,
                 routing: Optional[RoutingConfig], dense: bool):
        super().__init__()
        self.image_size = _checks.positive_int("image_size", image_size)
        self.in_channels = _checks.positive_int("in_channels", in_channels)
        self.patch_size = _checks.positive_int("patch_size", patch_size)
        _checks.positive_int("dim", dim)
        _checks.positive_int("depth", depth)
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size})")
        side = image_size // patch_size
        self.side = side
        self.dense = bool(dense)
        self.routing = routing = RoutingConfig.of(routing)
        window = routing.light_window_size
        if not dense and side % _checks.positive_int("light_window_size", window):
            raise ValueError(f"the feature map side image_size / patch_size = {side} must be divisible by "
                             f"light_window_size ({window})")
        self.stem = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_emb = nn.Parameter(torch.randn(side, side, dim) * 0.02)
        if dense:
            self.blocks = nn.ModuleList(DenseTransformerBlock(dim, heads=routing.heavy_heads,
                                                              dim_head=routing.heavy_dim_head,
                                                              ff_mult=routing.heavy_ff_mult) for _ in range(depth))
        else:
            self.blocks = nn.ModuleList(RoutedImageBlock(dim, routing) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def check_images(self, images: Tensor) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if not isinstance(images, Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must have shape (batch, {', '.join(map(str, expected))}), got "
                             f"{tuple(getattr(images, 'shape', ()))}")
        if not images.dtype.is_floating_point:
            raise ValueError(f"images must be a floating-point tensor, got {images.dtype}")

    def features(self, images: Tensor, condition: Optional[Tensor] = None) -> Tensor:
        self.check_images(images)
        x = self.stem(images).permute(0, 2, 3, 1) + self.pos_emb  # (b, side, side, dim)
        route_input = x  # what key/value routers built with kv_routed_by='embedding' score
        b, h, w, d = x.shape
        for block in self.blocks:
            if condition is not None:
                x = x + condition.view(b, 1, 1, d).to(x.dtype)
            x = block(x.reshape(b, h * w, d)).view(b, h, w, d) if self.dense else block(x, route_input)
        return self.norm(x)


IMAGE_READOUTS = ("mean", "corner")


class CoLT5ImageClassifier(PatchTransformer):
    """images (b, in_channels, image_size, image_size) float -> logits (b, num_classes).
    readout: classify the mean of the patches' features ("mean") or the top-left patch's ("corner",
    a fixed place the answer must be brought to, as the passkey's readout positions)."""

    def __init__(self, image_size: int = 32, in_channels: int = 1, num_classes: int = 2, patch_size: int = 1,
                 dim: int = 128, depth: int = 4, *, routing: Optional[RoutingConfig] = None,
                 dense: bool = False, readout: str = "mean"):
        super().__init__(image_size, in_channels, patch_size, dim, depth, routing, dense)
        self.num_classes = _checks.positive_int("num_classes", num_classes)
        self.readout = _checks.one_of("readout", readout, IMAGE_READOUTS)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        features = self.features(images)
        return self.head(features.mean(dim=(1, 2)) if self.readout == "mean" else features[:, 0, 0])
