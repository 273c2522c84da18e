"""ConditionalRoutedFeedForward: a narrow FF for every token plus a wide FF for routed tokens."""
from __future__ import annotations

from typing import Optional, Union

from torch import Tensor, nn

from .. import _checks
from ..routing import Router
from .routed_common import FeedForward, count, make_router


class ConditionalRoutedFeedForward(nn.Module):
    """x (b, n, dim) -> (b, n, dim): light FF on all tokens + router-weighted heavy FF on the top k.

    causal=True routes by CausalRouter (segment j by a threshold learned on segment j-1), so no
    output depends on later tokens; `causal_segment_size` sets the segment length and
    `max_seq_len` the length the token budget is for (default: each input's own length).
    heavy=False keeps only the light FF (the light-only ablation). use_triton (colt5-attention's
    fused-solver switch) is accepted and changes nothing: the compiled solver is used on CUDA anyway.
    router_straight_through defaults to True, as in colt5-attention.
    """

    def __init__(self, dim: int, *, num_heavy_tokens: int, light_ff_mult: float = 0.5,
                 heavy_ff_mult: float = 4, router_straight_through: bool = True,
                 router_type: str = "coor_descent", router_kwargs: Optional[dict] = None,
                 causal: bool = False, causal_segment_size: int = 128, max_seq_len: Optional[int] = None,
                 heavy: bool = True, use_triton: bool = False):
        super().__init__()
        self.dim = _checks.positive_int("dim", dim)
        self.num_heavy_tokens = _checks.positive_int("num_heavy_tokens", num_heavy_tokens)
        _checks.positive_number("light_ff_mult", light_ff_mult)
        _checks.positive_number("heavy_ff_mult", heavy_ff_mult)
        self.causal = causal
        self.norm = nn.LayerNorm(dim)
        self.light_ff = FeedForward(dim, light_ff_mult)
        self.has_heavy = bool(heavy)
        if not self.has_heavy:  # the light-only ablation
            return
        self.heavy_ff = FeedForward(dim, heavy_ff_mult)
        self.router = make_router(dim, router_type=router_type, straight_through=router_straight_through,
                                  router_kwargs=router_kwargs, max_seq_len=max_seq_len,
                                  causal_segment=_checks.positive_int("causal_segment_size", causal_segment_size)
                                  if causal else None)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None,
                num_heavy_tokens: Union[int, Tensor, None] = None) -> Tensor:
        _checks.features("x", x, self.dim)
        mask = _checks.mask_for("mask", mask, x.shape[:2], "x (batch, seq)")
        k = count("num_heavy_tokens", num_heavy_tokens, self.num_heavy_tokens)
        x = self.norm(x)
        out = self.light_ff(x)
        if not self.has_heavy:
            return out
        routing = self.router(x, num_tokens=k, mask=mask)
        heavy = self.heavy_ff(routing.tokens)
        return Router.scatter(routing, heavy, out)
