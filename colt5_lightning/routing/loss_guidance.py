"""Loss-guided routing: a learning signal for the tokens a router does not route.

A router learns only through the tokens it routes, so a query router that starts by not routing
a decoder's answer positions never learns that it should (docs/RESULTS.md, section 2). Here the
query and feed-forward routers also learn to rank positions by how badly the model predicts
their next token: the target is softmax(token_loss / temperature) over the scored positions, the
prediction softmax(score) over all valid ones, and the loss their cross-entropy. The token loss
is detached and the router scores its own detached input, so this trains the routers' vectors
and nothing else: the model is not pushed to make tokens look hard.

It is causal: the target is a training label, and at inference a router still scores position t
from the hidden state at t alone.
"""
from __future__ import annotations

from contextlib import contextmanager
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


def is_guided(name: str) -> bool:
    """Query and feed-forward routers are guided; key/value routers are not (what a key/value
    is worth shows in the queries that read it, not in its own next-token loss)."""
    return not name.endswith("kv_router")


@contextmanager
def recording_router_scores(model: nn.Module) -> Iterator[List[Tensor]]:
    """While inside, every forward of a guided router of model appends its scores (b, r, n),
    taken from its own input with the gradient stopped there, to the yielded list."""
    recorded: List[Tensor] = []

    def record(router, args, kwargs, _output):
        x = (args[0] if args else kwargs["x"]).detach()
        recorded.append(F.linear(x.float(), router.routing_tokens.float()).transpose(1, 2))

    handles = [module.register_forward_hook(record, with_kwargs=True)
               for name, module in model.named_modules()
               if isinstance(module, (Router, CausalRouter)) and is_guided(name)]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()
