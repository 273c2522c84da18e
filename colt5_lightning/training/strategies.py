"""Distributed strategies that know this package's blocks."""
from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy


def transformer_block_classes() -> set:
    """Every block class a model of this package is a stack of: the unit to shard and checkpoint."""
    from ..layers import ConditionalRoutedTransformerBlock, DenseTransformerBlock
    from ..models.image import RoutedImageBlock
    return {ConditionalRoutedTransformerBlock, DenseTransformerBlock, RoutedImageBlock}


class BlockFSDPStrategy(FSDPStrategy):
    """FSDP with one wrapped unit per transformer block and, optionally, activation checkpointing
    of each block, set from YAML by name rather than by a Python policy object."""

    def __init__(self, activation_checkpointing: bool = True, sharding_strategy: str = "FULL_SHARD",
                 **kwargs: Any):
        blocks = transformer_block_classes()
        kwargs.setdefault("auto_wrap_policy", blocks)
        if activation_checkpointing:
            kwargs.setdefault("activation_checkpointing_policy", blocks)
        super().__init__(sharding_strategy=sharding_strategy, **kwargs)
