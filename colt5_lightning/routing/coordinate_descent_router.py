"""CoordinateDescentRouter: colt5-attention's router class, with its constructor and its return.

For code written against colt5-attention: `router(x, num_tokens=k, mask=mask)` returns
RouterReturn(indices, scores, routed_tokens, routed_mask) as the reference does: the k
selected positions, their weights (1 in the forward pass under straight_through, the default),
the gathered tokens and their mask (None without a mask); without a route dimension when
num_routing_tokens is 1. When the input has no more than k tokens nothing is selected: indices
is None, the scores are ones and routed_tokens is x. learned_routing_tokens=True takes the routing
tokens at each call (`routing_tokens`, (b, d) or (b, r, d)); route_block_size routes ⌈k / blocks⌉
in each whole block of that many tokens. The solver is this package's coordinate
descent, which reaches Σλ = k (the reference's 20 iterations stop short of it).
"""
from __future__ import annotations

from collections import namedtuple
from typing import Optional

import torch
from torch import Tensor

from .. import _checks
from .gather import gather_tokens
from .router import Router, from_blocks, scored_input, to_blocks, whole_blocks

RouterReturn = namedtuple("RouterReturn", ["indices", "scores", "routed_tokens", "routed_mask"])


class CoordinateDescentRouter(Router):
    """colt5-attention's CoordinateDescentRouter arguments and defaults; see the module doc."""

    def __init__(self, dim: int, straight_through: bool = True, n_iters: int = 20, fetch_k_ratio: float = 9 / 8,
                 eps: float = 0.03, eps_decay: float = 0.7, eps_init: float = 4.0, num_routing_tokens: int = 1,
                 learned_routing_tokens: bool = False, use_triton: bool = False, cosine_sim_routing: bool = False,
                 cosine_sim_scale: float = 8.0, route_block_size: Optional[int] = None,
                 triton_checkpoint_segments: Optional[int] = None):
        super().__init__(dim, num_routing_tokens=num_routing_tokens, router_type="coor_descent",
                         straight_through=straight_through, n_iters=n_iters, eps=eps, eps_init=eps_init,
                         eps_decay=eps_decay, fetch_k_ratio=fetch_k_ratio, cosine_sim_routing=cosine_sim_routing,
                         cosine_sim_scale=cosine_sim_scale, learned_routing_tokens=learned_routing_tokens,
                         route_block_size=route_block_size)

    def forward(self, x: Tensor, *, num_tokens: int, mask: Optional[Tensor] = None, random_route: bool = False,
                routing_tokens: Optional[Tensor] = None, keep_one_route_dim: bool = False) -> RouterReturn:
        _checks.features("x", x, self.dim)
        b, n, _ = x.shape
        mask = _checks.mask_for("mask", mask, (b, n), "x (batch, seq)")
        k = _checks.positive_int("num_tokens", num_tokens)
        r = self.num_routing_tokens
        squeeze = r == 1 and not keep_one_route_dim
        if n <= k:  # nothing to choose
            if not squeeze:
                x = x.unsqueeze(1).expand(b, r, n, x.shape[-1])
                mask = None if mask is None else mask.unsqueeze(1).expand(b, r, n)
            return RouterReturn(None, torch.ones((b, n) if squeeze else (b, r, n), device=x.device, dtype=x.dtype),
                                x, mask)
        scores = self.score(scored_input(x, None, self.detach_input), random_route, routing_tokens)
        valid = None if mask is None else mask.unsqueeze(1).expand(b, r, n)
        if self.route_block_size is None:
            indices, selected, routed_mask = self._select(scores, k, valid)
        else:
            indices, selected, routed_mask = self._select_in_blocks(scores, k, valid)
        tokens = gather_tokens(x, indices)
        if squeeze:
            indices, selected, tokens = indices[:, 0], selected[:, 0], tokens[:, 0]
            routed_mask = None if routed_mask is None else routed_mask[:, 0]
        return RouterReturn(indices, selected, tokens, routed_mask)

    def _select(self, scores: Tensor, k: int, valid: Optional[Tensor]) -> tuple:
        """(indices, weights, mask or None), each (b, r, k), of the top k of scores (b, r, n)."""
        b, r, n = scores.shape
        solve_k = min(k * self.over_fetch, n)  # the reference solves for the over-fetched k, then keeps k
        weights = self.soft_topk(scores.reshape(b * r, n), solve_k,
                                 None if valid is None else valid.reshape(b * r, n)).view(b, r, n)
        # the top k by weight are the top k by score (the weights rise with the score), but
        # saturated weights tie at 1: ranking by score keeps the choice well defined
        ranked = scores if valid is None else scores.masked_fill(~valid, float("-inf"))
        indices = ranked.topk(k, dim=-1).indices
        selected = weights.gather(-1, indices)
        routed_mask = None if valid is None else valid.gather(-1, indices)
        if self.straight_through:
            selected = selected + (1.0 - selected).detach()
        if routed_mask is not None:
            selected = selected * routed_mask
        return indices, selected, routed_mask

    def _select_in_blocks(self, scores: Tensor, k: int, valid: Optional[Tensor]) -> tuple:
        """_select within each whole block of route_block_size tokens, ⌈k / blocks⌉ per block."""
        size = self.route_block_size
        blocks = whole_blocks(scores.shape[-1], size)
        per_block = -(-k // blocks)
        if per_block > size:  # the reference's top-k would fail inside the block
            raise ValueError(f"route_block_size {size} cannot route num_tokens {k}: {blocks} whole block(s) of "
                             f"{size} would each route {per_block}")
        indices, selected, routed_mask = self._select(to_blocks(scores, blocks, size), per_block,
                                                      None if valid is None else to_blocks(valid, blocks, size))
        return (from_blocks(indices, blocks, size, positions=True), from_blocks(selected, blocks, size),
                None if routed_mask is None else from_blocks(routed_mask, blocks, size))

    @staticmethod
    def route_back(src: Tensor, routed_tokens: Tensor, indices: Tensor) -> Tensor:
        """Writes routed_tokens (b, k, d) into src (b, n, d) at indices (b, k), in place, and returns src."""
        src[torch.arange(src.shape[0], device=src.device).unsqueeze(-1), indices] = routed_tokens
        return src
