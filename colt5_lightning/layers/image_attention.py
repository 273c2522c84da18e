"""ConditionalRoutedImageAttention: routed attention over feature maps."""
from __future__ import annotations

from typing import Optional, Union

from torch import Tensor

from .. import _checks
from .attention import RoutedAttentionBase
from .local_attention import WindowAttention2d


class ConditionalRoutedImageAttention(RoutedAttentionBase):
    """x (b, h, w, dim), or (b, dim, h, w) with channel_first=True, -> same layout. The light
    branch attends within light_window_size × light_window_size tiles; the heavy branch routes
    queries and key/values over the whole map. mask (b, h, w) marks valid pixels; route_input, in
    x's layout, holds the model's embeddings, which kv_routed_by='embedding' scores."""

    def __init__(self, dim: int, *, channel_first: bool = False, **kwargs):
        super().__init__(dim, **kwargs)
        self.channel_first = bool(channel_first)
        if self.has_light_attn:
            self.light = WindowAttention2d(dim, heads=self.light_heads, dim_head=self.light_dim_head,
                                           window_size=self.light_window_size)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None,
                num_heavy_tokens_q: Union[int, Tensor, None] = None,
                num_heavy_tokens_kv: Union[int, Tensor, None] = None,
                route_input: Optional[Tensor] = None) -> Tensor:
        layout = "(batch, dim, height, width)" if self.channel_first else "(batch, height, width, dim)"
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
        if route_input is not None and (not isinstance(route_input, Tensor) or route_input.shape != x.shape):
            raise ValueError(f"route_input must have x's shape {tuple(x.shape)} {layout}, got "
                             f"{tuple(getattr(route_input, 'shape', ()))}")
        if self.channel_first:
            route_input = None if route_input is None else route_input.movedim(1, -1)
            if x.ndim == 4 and x.shape[1] != self.dim:
                raise ValueError(f"x must have {self.dim} channels in dim 1 {layout}, got {x.shape[1]}")
            _checks.features("x", x.movedim(1, -1) if x.ndim == 4 else x, self.dim, rank=4, layout=layout)
            x = x.movedim(1, -1)
        else:
            _checks.features("x", x, self.dim, rank=4, layout=layout)
        b, h, w, d = x.shape
        win = self.light_window_size
        if h % win or w % win:
            raise ValueError(f"image height and width ({h}, {w}) must be divisible by light_window_size ({win})")
        mask = _checks.mask_for("mask", mask, (b, h, w), "the image (batch, height, width)")
        k_q, k_kv = self._counts(num_heavy_tokens_q, num_heavy_tokens_kv)
        x = self.norm(x)
        light = self._light(x, mask)
        flat_mask = None if mask is None else mask.reshape(b, h * w)
        if route_input is not None:
            route_input = route_input.reshape(b, h * w, d)
        out = self._heavy(x.reshape(b, h * w, d), flat_mask, k_q, k_kv, light.reshape(b, h * w, d), route_input)
        out = out.view(b, h, w, d)
        return out.movedim(-1, 1) if self.channel_first else out
