"""Routing weight by position for one passkey example, per layer and router."""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from ..data.passkey import PLACEHOLDER, make_sample
from ..data import byte_codec
from ..training.router_monitor import name_routers


def passkey_example(seq_len: int, *, readout: bool, key_digits: int = 5, seed: int = 0,
                    index: int = 0) -> Tuple[Tensor, Tuple[int, int]]:
    """ids (1, seq_len) of a held-out passkey sample and the needle's span [start, end)."""
    from ..data._seeding import VAL_STREAM
    sample = make_sample(seq_len - 1 if readout else seq_len, key_digits, seed, VAL_STREAM, index)
    text = sample.text[:-key_digits] + PLACEHOLDER * key_digits if readout else sample.text[:-1]
    needle_len = len(f"The pass key is {sample.key}. Remember it. {sample.key} is the pass key. ")
    return byte_codec.encode(text).unsqueeze(0), (sample.depth, sample.depth + needle_len)


@torch.no_grad()
def routing_by_position(model: nn.Module, ids: Tensor) -> Dict[str, Tensor]:
    """{"router/layer0/q", ...: (n,) weight each position got from that router (0 = not routed)},
    from one eval-mode forward of model(ids) (batch 1; the first routing token of each router)."""
    captured: Dict[str, Tensor] = {}
    handles = []
    n = ids.shape[1]
    for _, key, router in name_routers(model):
        def hook(module, args, routing, key=key):
            weights = torch.zeros(n).scatter_add(0, routing.indices[0, 0].cpu(),
                                                 routing.weights[0, 0].float().cpu())
            captured[key] = weights
        handles.append(router.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(ids)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return captured
