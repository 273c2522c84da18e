"""The LightningModules' side of routing by hand (colt5_lightning.routing.oracle)."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence, Union

from torch import nn

from ..routing.oracle import forced_routing


def oracle_for(model: nn.Module, batch: dict, enabled: Union[bool, Sequence[str]]):
    """forced_routing on the batch's "route_mask" when enabled: True for every router, or a list of
    router kinds ('q', 'kv', 'ff') to route only those by hand; nothing when False or empty."""
    if not enabled:
        return nullcontext()
    if "route_mask" not in batch:
        raise KeyError("oracle_routing needs batches with a 'route_mask' (batch, seq) bool entry marking the "
                       "tokens to route; PasskeyDataModule and PasskeyReadoutDataModule provide one")
    return forced_routing(model, batch["route_mask"], None if enabled is True else list(enabled))
