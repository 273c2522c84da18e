"""The routed-block arguments every model and LightningModule passes down.

Signatures stay explicit, because LightningCLI reads YAML keys, types and --help from them;
the forwarding is written once, here.
"""
from __future__ import annotations

from typing import Mapping

ROUTING_ARGS = (
    "num_heavy_attn_tokens_q", "num_heavy_attn_tokens_kv", "num_heavy_ff_tokens",
    "light_dim_head", "light_heads", "light_window_size", "heavy_dim_head", "heavy_heads",
    "light_ff_mult", "heavy_ff_mult", "num_routed_kv",
    "router_straight_through", "router_type", "router_kwargs", "kv_scaling", "heavy",
)


def routing_args(values: Mapping) -> dict:
    """The routed-block arguments out of a caller's `locals()`."""
    return {name: values[name] for name in ROUTING_ARGS}
