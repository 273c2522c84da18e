"""CoLT5ImageDenoiser: predicts the noise in a noisy image, for diffusion (the seed's todo: routed
attention over high-resolution feature maps, tried for diffusion).

noisy images and diffusion steps -> the image trunk (PatchTransformer: patch stem, 2-D positions,
routed image blocks) with the step's embedding added before every block -> a linear map of each
patch's features back to its pixels. The heavy branch routes the patches that need the whole
map; the light branch denoises every patch from its tile.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .config import RoutingConfig
from .image import PatchTransformer


def step_embedding(steps: Tensor, dim: int) -> Tensor:
    """(b,) diffusion steps -> (b, dim) sinusoids of geometrically spaced frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=steps.device, dtype=torch.float32) / half)
    angles = steps.float().unsqueeze(-1) * freqs
    embedding = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return nn.functional.pad(embedding, (0, dim - 2 * half))


class CoLT5ImageDenoiser(PatchTransformer):
    """(noisy images (b, in_channels, image_size, image_size), steps (b,) long) -> predicted noise,
    the images' shape."""

    def __init__(self, image_size: int = 32, in_channels: int = 1, patch_size: int = 1, dim: int = 128,
                 depth: int = 4, *, routing: Optional[RoutingConfig] = None, dense: bool = False):
        super().__init__(image_size, in_channels, patch_size, dim, depth, routing, dense)
        self.dim = dim
        self.step_mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))
        self.to_pixels = nn.Linear(dim, in_channels * patch_size * patch_size)
        nn.init.zeros_(self.to_pixels.weight)  # starts by predicting no noise: a stable first step
        nn.init.zeros_(self.to_pixels.bias)

    def forward(self, images: Tensor, steps: Tensor) -> Tensor:
        if not isinstance(steps, Tensor) or steps.shape != images.shape[:1]:
            raise ValueError(f"steps must be a (batch,) tensor = ({images.shape[0]},), "
                             f"got {tuple(getattr(steps, 'shape', ()))}")
        features = self.features(images, condition=self.step_mlp(step_embedding(steps, self.dim)))
        b, side, _, _ = features.shape
        p, c = self.patch_size, self.in_channels
        pixels = self.to_pixels(features).view(b, side, side, c, p, p)
        return pixels.permute(0, 3, 1, 4, 2, 5).reshape(b, c, side * p, side * p).to(images.dtype)
