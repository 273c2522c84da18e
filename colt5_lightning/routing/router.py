"""The learned router: scores tokens against routing token(s), solves a soft top-k, selects.

A Router knows nothing about logging. Its forward returns a `Routing` holding everything a
monitor needs, so a forward hook (see training.RouterMonitor) can read statistics at no cost
to models that are not monitored.
"""
from __future__ import annotations

import functools

from contextlib import contextmanager

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from .gather import gather_tokens, scatter_add_tokens
from .soft_topk import coor_descent, cum_softmax_topk, ideal_num_selected, sinkhorn_topk

ROUTER_TYPES = ("coor_descent", "sinkhorn", "cum_softmax")


@dataclass
class Routing:
    """One routing decision for a batch. r = routing tokens, m = selected slots per route."""

    indices: Tensor       # (b, r, m) long: positions in the sequence
    weights: Tensor       # (b, r, m) float32: weight of each slot, 0 on invalid slots
    routed_mask: Tensor   # (b, r, m) bool: slot holds a real (unmasked, within-k) token
    tokens: Tensor        # (b, r, m, d): the gathered inputs
    scores: Tensor        # (b, r, n) float32: raw router scores
    all_weights: Tensor   # (b, r, n) float32: soft top-k weights over the whole sequence
    num_tokens: Union[int, Tensor]  # the k asked for (int or (b,))


FORCED_BONUS = 1e4  # far above any learned score: a forced token is always selected, at weight 1


def raw_scores(x: Tensor, routing_tokens: Tensor, cosine_sim_scale: Optional[float] = None) -> Tensor:
    """(b, r, n) float32 scores of x (b, n, d) against routing_tokens, shared (r, d) or per sample
    (b, r, d): dot products, or with cosine_sim_scale (colt5-attention's cosine_sim_routing) scaled
    cosine similarities."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, tokens = x.float(), routing_tokens.float()
        if cosine_sim_scale is not None:
            x, tokens = F.normalize(x, dim=-1), F.normalize(tokens, dim=-1) * cosine_sim_scale
        if tokens.ndim == 3:
            return torch.bmm(tokens, x.transpose(1, 2))
        # a linear layer rather than einsum: its backward is one GEMM, not a batched outer
        # product (2.5x faster fwd+bwd at 4096x512 on CPU)
        return F.linear(x, tokens).transpose(1, 2)


def scored_input(x: Tensor, score_input: Optional[Tensor], detach: bool = False) -> Tensor:
    """What a router scores: score_input when given (the same (b, n, d) as x), else x; detached
    for a router built with detach_input."""
    if score_input is not None and score_input.shape != x.shape:
        raise ValueError(f"score_input must have x's shape {tuple(x.shape)} (batch, seq, dim), "
                         f"got {tuple(score_input.shape)}")
    scored = x if score_input is None else score_input
    return scored.detach() if detach else scored


def given_routing_tokens(routing_tokens: Optional[Tensor], batch: int, num_routes: int, dim: int) -> Tensor:
    """routing_tokens passed to a router built with learned_routing_tokens=True, as (b, r, d)."""
    if routing_tokens is None:
        raise ValueError("this router was built with learned_routing_tokens=True: pass routing_tokens, "
                         f"shape (batch, dim) or (batch, {num_routes}, dim), to its forward")
    if routing_tokens.ndim == 2:
        routing_tokens = routing_tokens.unsqueeze(1)
    if routing_tokens.shape != (batch, num_routes, dim):
        raise ValueError(f"routing_tokens must have shape (batch, dim) = {(batch, dim)} or (batch, num_routing_tokens, "
                         f"dim) = {(batch, num_routes, dim)}, got {tuple(routing_tokens.shape)}")
    return routing_tokens


def whole_blocks(n: int, size: int) -> int:
    """How many whole blocks of `size` tokens route_block_size cuts n tokens into (an error if none)."""
    if n < size:
        raise ValueError(f"route_block_size {size} is longer than the input ({n} tokens): no block to route from")
    return n // size


def to_blocks(t: Tensor, blocks: int, size: int) -> Tensor:
    """(b, r, n, ...) -> (b·blocks, r, size, ...): the whole blocks of the sequence dim folded into the batch."""
    return t[:, :, :blocks * size].unflatten(2, (blocks, size)).transpose(1, 2).flatten(0, 1)


def from_blocks(t: Tensor, blocks: int, size: int, positions: bool = False) -> Tensor:
    """(b·blocks, r, m) -> (b, r, blocks·m), the inverse of to_blocks for per-slot values; with
    positions, each block's in-block positions become positions in the sequence."""
    t = t.unflatten(0, (-1, blocks))
    if positions:
        t = t + (torch.arange(blocks, device=t.device) * size).view(1, blocks, 1, 1)
    return t.transpose(1, 2).flatten(2)


def reference_router_keywords(over_fetch: float, fetch_k_ratio: Optional[float], cosine_sim_routing: bool,
                              cosine_sim_scale: float) -> tuple:
    """(over_fetch, cosine scale or None) from colt5-attention's router keywords: fetch_k_ratio is
    its name for over_fetch; cosine_sim_routing scores by cosine similarity × cosine_sim_scale."""
    if fetch_k_ratio is not None:
        if over_fetch != 9 / 8 and over_fetch != fetch_k_ratio:
            raise ValueError(f"over_fetch={over_fetch} and fetch_k_ratio={fetch_k_ratio} name the same setting: give one")
        over_fetch = fetch_k_ratio
    if not over_fetch >= 1.0:
        raise ValueError(f"over_fetch (fetch_k_ratio) must be >= 1, got {over_fetch}")
    scale = _checks.positive_number("cosine_sim_scale", cosine_sim_scale) if cosine_sim_routing else None
    return float(over_fetch), scale


EVAL_NOISES = ("none", "fixed")
_FIXED_NOISE_SEED, _FIXED_NOISE_CHUNK = 0, 1024


@functools.lru_cache(maxsize=16)
def _fixed_noise_chunks(routes: int, chunks: int, device: str) -> Tensor:
    return torch.cat([torch.randn(routes, _FIXED_NOISE_CHUNK,
                                  generator=torch.Generator().manual_seed(_FIXED_NOISE_SEED + c))
                      for c in range(chunks)], -1).to(device)


def fixed_noise(routes: int, n: int, device=None) -> Tensor:
    """(routes, n) standard normal draws that depend only on (route, position): chunk c of
    _FIXED_NOISE_CHUNK positions comes from its own seeded generator, so a prefix gets the values
    a longer sequence has there (causal routing's prefix property), every call and every input
    alike. Drawn once per size and device, not at every router call (generation calls them per token)."""
    return _fixed_noise_chunks(routes, -(-n // _FIXED_NOISE_CHUNK), str(torch.device(device or "cpu")))[:, :n]


def score_noise_for(scores: Tensor, std: float, training: bool, eval_noise: str) -> Optional[Tensor]:
    """The noise a router adds to scores (b, r, n): fresh N(0, std²) draws while training; in eval
    none, or with eval_noise='fixed' std times fixed_noise, one draw that never changes."""
    if not std or (not training and eval_noise == "none"):
        return None
    if training:
        return std * torch.randn_like(scores)
    return std * fixed_noise(scores.shape[-2], scores.shape[-1], scores.device).to(scores.dtype)


def adjust_scores(scores: Tensor, noise: Optional[Tensor], forced: Optional[Tensor], random_route: bool = False) -> Tensor:
    """scores (b, r, n) plus noise (see score_noise_for) and, where forced (b, n) is True,
    FORCED_BONUS; random_route replaces them by N(0, 1) draws first (colt5-attention's negative control)."""
    if random_route:
        scores = torch.randn_like(scores)
    if noise is not None:
        scores = scores + noise
    if forced is not None:
        if forced.shape != (scores.shape[0], scores.shape[-1]):
            raise ValueError(f"forced routing mask must have shape (batch, seq) = "
                             f"{(scores.shape[0], scores.shape[-1])}, got {tuple(forced.shape)}")
        scores = scores + FORCED_BONUS * forced.to(scores.device, scores.dtype).unsqueeze(1)
    return scores


@contextmanager
def named_errors(label: str):
    """Prefixes a NonFiniteError raised inside with the router's label."""
    try:
        yield
    except _checks.NonFiniteError as ex:
        raise _checks.NonFiniteError(f"{label}: {ex}") from None


class Router(nn.Module):
    """Scores x (b, n, d) with `num_routing_tokens` learned vectors and keeps the top tokens.

    router_type: 'coor_descent' (the paper's), 'sinkhorn' (optimal transport) or 'cum_softmax'.
    During training ⌈k·over_fetch⌉ tokens are selected (the paper lets 9/8·k carry weight).
    straight_through: the forward weight is 1 for selected tokens, the gradient the soft weight's.
    score_noise: while training, Gaussian noise of this std is added to the scores before the
    soft top-k, so tokens just below the cut are sometimes routed and learn whether they should
    be. Without it a router can settle early on never routing the tokens that matter (a pass
    key's placeholders): unrouted tokens get no gradient.
    eval_noise: what replaces score_noise in eval: 'none' (no noise) or 'fixed' (score_noise times
    one standard normal draw per route and position, the same for every input and call:
    evaluation stays deterministic, yet sees scores as noisy as in training). A model whose
    routers score many tokens equally (an encoder without a position table scoring repeated
    filler) relies on the noise to break ties; evaluated without it, its routing is not the one it
    was trained with (the passkey encoder answered 58% of held-out keys without, 97-100% with).
    colt5-attention's router keywords: fetch_k_ratio (= over_fetch), cosine_sim_routing and
    cosine_sim_scale (scores are scaled cosine similarities), use_triton and
    triton_checkpoint_segments (accepted; the fused solver is chosen by `fused`).
    learned_routing_tokens: the routing tokens come from elsewhere (for example a summary of the
    queries), passed to forward as `routing_tokens`, instead of being this router's parameters.
    detach_input: the scores' gradient reaches the routing tokens only, not the tokens scored. A
    router's weight is exp((s + a)/ε) below 1, so its gradient is the heavy branch's times 1/ε
    (33 at ε = 0.03); when every position reads a routed token (heavy_queries='all') that
    gradient, fed back into the residual stream, swamped the language-modelling signal (a 128-byte
    pass key was not learned in 400 steps; detached, in 200).
    route_block_size: route evenly: the sequence is cut into blocks of this many tokens and each
    block routes ⌈k / blocks⌉ of its own; tokens after the last whole block are never routed
    (both as colt5-attention).
    """

    def __init__(self, dim: int, *, num_routing_tokens: int = 1, router_type: str = "coor_descent",
                 straight_through: bool = False, over_fetch: float = 9 / 8, n_iters: Optional[int] = None,
                 eps: Optional[float] = None, eps_init: Optional[float] = 4.0, eps_decay: float = 0.7,
                 method: str = "exact", fused: Optional[bool] = None, score_noise: float = 0.0,
                 fetch_k_ratio: Optional[float] = None, cosine_sim_routing: bool = False,
                 cosine_sim_scale: float = 8.0, use_triton: bool = False,
                 triton_checkpoint_segments: Optional[int] = None, learned_routing_tokens: bool = False,
                 route_block_size: Optional[int] = None, detach_input: bool = False, eval_noise: str = "none"):
        super().__init__()
        self.dim = _checks.positive_int("dim", dim)
        self.detach_input = bool(detach_input)
        self.num_routing_tokens = _checks.positive_int("num_routing_tokens", num_routing_tokens)
        self.router_type = _checks.one_of("router_type", router_type, ROUTER_TYPES)
        self.over_fetch, self.cosine_sim_scale = reference_router_keywords(over_fetch, fetch_k_ratio,
                                                                           cosine_sim_routing, cosine_sim_scale)
        self.straight_through = bool(straight_through)
        defaults = {"coor_descent": (20, 0.03), "sinkhorn": (30, 0.05), "cum_softmax": (1, 1.0)}[router_type]
        self.n_iters = _checks.positive_int("n_iters", defaults[0] if n_iters is None else n_iters)
        self.eps = _checks.positive_number("eps", defaults[1] if eps is None else eps)
        self.eps_init = eps_init
        self.eps_decay = eps_decay
        self.method = _checks.one_of("method", method, ("exact", "iterative"))  # coordinate descent: 'exact' fixed point or the 'iterative' descent
        self.fused = fused
        self.score_noise = _checks.non_negative_number("score_noise", score_noise)
        self.eval_noise = _checks.one_of("eval_noise", eval_noise, EVAL_NOISES)
        self.forced: Optional[Tensor] = None  # (b, n) bool: positions routed by hand (see routing.oracle)
        self.label = "router"  # its module path once a NonFiniteGuard has named it, for error messages
        self.route_block_size = (None if route_block_size is None
                                 else _checks.positive_int("route_block_size", route_block_size))
        self.routing_tokens = (None if learned_routing_tokens
                               else nn.Parameter(torch.randn(num_routing_tokens, dim) * dim ** -0.5))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_routing_tokens={self.num_routing_tokens}, "
                f"router_type={self.router_type!r}, straight_through={self.straight_through}")

    def score(self, x: Tensor, random_route: bool = False, routing_tokens: Optional[Tensor] = None) -> Tensor:
        """Router scores (b, r, n) in float32, autocast or not, with exploration noise while
        training and forced positions raised above all others. routing_tokens: (b, d) or (b, r, d),
        required by (and only by) a router built with learned_routing_tokens=True."""
        if self.routing_tokens is None:
            tokens = given_routing_tokens(routing_tokens, x.shape[0], self.num_routing_tokens, self.dim)
        elif routing_tokens is not None:
            raise ValueError("routing_tokens given to a router with its own (learned_routing_tokens=False)")
        else:
            tokens = self.routing_tokens
        scores = raw_scores(x, tokens, self.cosine_sim_scale)
        noise = score_noise_for(scores, self.score_noise, self.training, self.eval_noise)
        return adjust_scores(scores, noise, self.forced, random_route)

    def soft_topk(self, scores: Tensor, k, mask: Optional[Tensor]) -> Tensor:
        if self.router_type == "coor_descent":
            return coor_descent(scores, k=k, n_iters=self.n_iters, eps=self.eps, eps_init=self.eps_init,
                                eps_decay=self.eps_decay, mask=mask, method=self.method,
                                fused=self.fused)
        if self.router_type == "sinkhorn":
            return sinkhorn_topk(scores, k=k, n_iters=self.n_iters, eps=self.eps, mask=mask)
        return cum_softmax_topk(scores, k=k, mask=mask)

    def forward(self, x: Tensor, *, num_tokens: Union[int, Tensor], mask: Optional[Tensor] = None,
                random_route: bool = False, routing_tokens: Optional[Tensor] = None,
                score_input: Optional[Tensor] = None) -> Routing:
        """random_route: route by random scores instead of learned ones (a negative control).
        routing_tokens: (b, d) or (b, r, d), for a router built with learned_routing_tokens=True.
        score_input: (b, n, d) scored instead of x (x's tokens are still the ones routed)."""
        _checks.features("x", x, self.dim)
        b, n, _ = x.shape
        mask = _checks.mask_for("mask", mask, (b, n), "x (batch, seq)")
        k = _checks.token_count("num_tokens", num_tokens)
        scores = self.score(scored_input(x, score_input, self.detach_input), random_route, routing_tokens)
        if self.route_block_size is not None:
            return self._route_in_blocks(x, scores, k, mask)
        return self._route(x, scores, k, mask)

    def _route_in_blocks(self, x: Tensor, scores: Tensor, k: Union[int, Tensor], mask: Optional[Tensor]) -> Routing:
        """Each whole block of route_block_size tokens routes ⌈k / blocks⌉ of its own."""
        b, n, _ = x.shape
        size = self.route_block_size
        blocks = whole_blocks(n, size)
        per_block = (torch.div(k + blocks - 1, blocks, rounding_mode="floor").repeat_interleave(blocks)
                     if isinstance(k, Tensor) else -(-k // blocks))
        block_mask = None if mask is None else to_blocks(mask.unsqueeze(1), blocks, size)[:, 0]
        block_x = to_blocks(x.unsqueeze(1), blocks, size)[:, 0]
        inner = self._route(block_x, to_blocks(scores, blocks, size), per_block, block_mask)
        indices = from_blocks(inner.indices, blocks, size, positions=True)
        all_weights = torch.zeros_like(scores)
        all_weights[..., :blocks * size] = from_blocks(inner.all_weights, blocks, size)
        return Routing(indices=indices, weights=from_blocks(inner.weights, blocks, size),
                       routed_mask=from_blocks(inner.routed_mask, blocks, size), tokens=gather_tokens(x, indices),
                       scores=scores, all_weights=all_weights, num_tokens=k)

    def _route(self, x: Tensor, scores: Tensor, k: Union[int, Tensor], mask: Optional[Tensor]) -> Routing:
        b, n, _ = x.shape
        r = self.num_routing_tokens
        valid = None if mask is None else mask.unsqueeze(1).expand(b, r, n)
        k_rows = k.to(x.device).repeat_interleave(r) if isinstance(k, Tensor) else k
        with named_errors(self.label):
            all_weights = self.soft_topk(scores.reshape(b * r, n), k_rows,
                                         None if valid is None else valid.reshape(b * r, n)).view(b, r, n)

        selected = ideal_num_selected(k, self.over_fetch if self.training else 1.0)
        if isinstance(selected, Tensor):
            m = min(n, int(selected.max()))  # per-sample k needs one host sync for the shape
        else:
            m = min(n, selected)
        m = max(m, 1)
        ranked = scores if valid is None else scores.masked_fill(~valid, float("-inf"))
        indices = ranked.topk(m, dim=-1, sorted=isinstance(selected, Tensor)).indices
        routed_mask = torch.ones_like(indices, dtype=torch.bool) if valid is None else valid.gather(-1, indices)
        if isinstance(selected, Tensor):
            slot = torch.arange(m, device=x.device)
            routed_mask = routed_mask & (slot < selected.to(x.device).view(b, 1, 1))
        weights = all_weights.gather(-1, indices)
        if self.straight_through:
            weights = weights + (1.0 - weights).detach()
        weights = weights * routed_mask
        return Routing(indices=indices, weights=weights, routed_mask=routed_mask,
                       tokens=gather_tokens(x, indices), scores=scores, all_weights=all_weights,
                       num_tokens=k)

    @staticmethod
    def routed_positions(routing: Routing, n: int) -> Tensor:
        """(b, r, n) bool: the positions held by a valid routed slot of each route."""
        b, r, _ = routing.indices.shape
        hits = torch.zeros(b, r, n, dtype=torch.int32, device=routing.indices.device)
        return hits.scatter_add_(-1, routing.indices, routing.routed_mask.int()) > 0

    @staticmethod
    def scatter(routing: Routing, values: Tensor, out: Tensor) -> Tensor:
        """Adds values (b, r, m, d), scaled by the routing weights, at the routed positions of out."""
        return scatter_add_tokens(out, routing.indices, values * routing.weights.unsqueeze(-1).to(values.dtype))
