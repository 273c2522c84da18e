"""Loss-guided routing: a learning signal for the tokens a router does not route.

A router learns only through the tokens it routes, so a query router that starts by not routing
a decoder's answer positions never learns that it should (docs/RESULTS.md, section 2). Here the
routers also learn to rank positions: query and feed-forward routers ("readers") by how badly
the model predicts the token's next token, key/value routers ("memories") by how surprising the
token itself was to the model (-log p(x_t | x_<t)): what cannot be predicted from the context
must be remembered, as a pass key's digits. The target is softmax(value / temperature) over the
positions that have one, the prediction softmax(score) over all valid ones, and the loss their
cross-entropy. Targets are detached and each router scores its own detached input, so this
trains the routers' vectors and nothing else: the model is not pushed to make tokens look hard.

It is causal: the target is a training label, and at inference a router still scores position t
from the hidden state at t alone.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .causal import CausalRouter
from .router import Router


def loss_guided_routing_loss(scores: Tensor, token_loss: Tensor, scored: Tensor, valid: Tensor,
                             temperature: float = 1.0) -> Tensor:
    """scores (b, r, n) of one router; token_loss, scored, valid (b, n). Mean over the samples
    with a scored position of the cross-entropy between softmax(token_loss / temperature) over
    scored positions and softmax(scores) over valid ones."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scored = scored & valid
    target = (token_loss.detach().float() / temperature).masked_fill(~scored, float("-inf"))
    has_target = scored.any(-1)  # (b,)
    target = torch.where(has_target.unsqueeze(-1), target, 0.0).softmax(-1)  # (b, n)
    log_p = scores.float().masked_fill(~valid.unsqueeze(1), float("-inf")).log_softmax(-1)  # (b, r, n)
    per_sample = -(target.unsqueeze(1) * torch.where(scored.unsqueeze(1), log_p, 0.0)).sum(-1).mean(-1)
    return (per_sample * has_target).sum() / has_target.sum().clamp(min=1)


def route_supervision_loss(scores: list, route_mask: Tensor, mask=None) -> Tensor:
    """Mean over routers of loss_guided_routing_loss with the target spread evenly over the
    route_mask (b, n) tokens: each router is taught to score the tokens that hold the evidence
    above the rest."""
    valid = torch.ones_like(route_mask, dtype=torch.bool) if mask is None else mask.bool()
    zeros = torch.zeros(route_mask.shape, device=route_mask.device)
    return torch.stack([loss_guided_routing_loss(s, zeros, route_mask.bool(), valid) for s in scores]).mean()


def is_memory_router(name: str) -> bool:
    return name.endswith("kv_router")


@dataclass
class RecordedScores:
    """Router scores (b, r, n) recorded in one forward, by what they are guided towards."""

    readers: List[Tensor] = field(default_factory=list)   # query and FF routers: the token's next-token loss
    memories: List[Tensor] = field(default_factory=list)  # key/value routers: how surprising the token was


@contextmanager
def recording_router_scores(model: nn.Module) -> Iterator[RecordedScores]:
    """While inside, every router forward of model records its scores, taken from its own input
    with the gradient stopped there, in the yielded RecordedScores."""
    recorded = RecordedScores()

    def hook(into: List[Tensor]):
        def record(router, args, kwargs, _output):
            if router.routing_tokens is None:  # routing tokens passed in (learned_routing_tokens): not trained here
                return
            x = kwargs.get("score_input")  # what the router scored, when not its routed input
            x = (x if x is not None else args[0] if args else kwargs["x"]).detach()
            into.append(F.linear(x.float(), router.routing_tokens.float()).transpose(1, 2))
        return record

    handles = [module.register_forward_hook(
                   hook(recorded.memories if is_memory_router(name) else recorded.readers), with_kwargs=True)
               for name, module in model.named_modules() if isinstance(module, (Router, CausalRouter))]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


def token_surprise(logits: Tensor, input_ids: Tensor) -> Tensor:
    """(b, n): -log p(x_t | x_<t) under the model's own (detached) logits; 0 at t = 0."""
    log_p = logits[:, :-1].detach().float().log_softmax(-1)
    surprise = -log_p.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return torch.nn.functional.pad(surprise, (1, 0))
