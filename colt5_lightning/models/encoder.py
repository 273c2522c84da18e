"""CoLT5Encoder: a stack of conditionally routed transformer blocks with a final LayerNorm.

Every routed block is built from one RoutingConfig (models.config). `dense=True` swaps every
routed block for a dense pre-norm block of the same width and depth (full attention with
heavy_heads × heavy_dim_head, feed-forward hidden = dim · heavy_ff_mult), so routed and dense
models can be compared under one config; routing.heavy=False keeps every routed block's light
branch only (local attention and the narrow FF), the light-only ablation.
"""
from __future__ import annotations

from typing import Optional, Union

from torch import Tensor, nn

from .. import _checks
from .config import RoutingConfig
from ..layers import ConditionalRoutedTransformerBlock, DenseTransformerBlock


class CoLT5Encoder(nn.Module):
    """x (b, n, dim) -> (b, n, dim). mask (b, n) marks valid tokens.

    causal=True builds decoder blocks: no output depends on a later input, including through
    routing. For causal blocks the heavy token counts are budgets for max_seq_len tokens (default:
    each input's own length), spread over segments of light_window_size / 2; segment 0 routes nothing.
    """

    def __init__(self, dim: int = 256, depth: int = 4, *, routing: Optional[RoutingConfig] = None,
                 causal: bool = False, dense: bool = False, max_seq_len: Optional[int] = None):
        super().__init__()
        self.dim = _checks.positive_int("dim", dim)
        self.depth = _checks.positive_int("depth", depth)
        self.causal = bool(causal)
        self.dense = bool(dense)
        self.routing = routing = RoutingConfig.of(routing)
        if dense:
            blocks = [DenseTransformerBlock(dim, heads=routing.heavy_heads, dim_head=routing.heavy_dim_head,
                                            ff_mult=routing.heavy_ff_mult, causal=causal) for _ in range(depth)]
        else:
            blocks = [ConditionalRoutedTransformerBlock(dim, **routing.block_kwargs(), causal=causal,
                                                        max_seq_len=max_seq_len if causal else None)
                      for _ in range(depth)]
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None,
                num_heavy_attn_tokens_q: Union[int, Tensor, None] = None,
                num_heavy_attn_tokens_kv: Union[int, Tensor, None] = None,
                num_heavy_ff_tokens: Union[int, Tensor, None] = None) -> Tensor:
        """Token-count overrides apply to every routed block (a dense stack ignores them)."""
        _checks.features("x", x, self.dim)
        mask = _checks.mask_for("mask", mask, x.shape[:2], "x (batch, seq)")
        route_input = x  # what key/value routers built with kv_routed_by='embedding' score
        for block in self.blocks:
            if self.dense:
                x = block(x, mask)
            else:
                x = block(x, mask, num_heavy_attn_tokens_q=num_heavy_attn_tokens_q,
                          num_heavy_attn_tokens_kv=num_heavy_attn_tokens_kv,
                          num_heavy_ff_tokens=num_heavy_ff_tokens, route_input=route_input)
        return self.norm(x)
