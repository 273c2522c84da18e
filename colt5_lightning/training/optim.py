"""AdamW with a linear warm-up then a cosine decay, and the weight-decay split.

Weight decay applies to the weight matrices of linear and convolution layers (and the heavy
attention's key/value projection), never to norms, biases, embeddings, learned positions or
routing tokens: `no_weight_decay` decides which parameter is which.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..models.config import coerce


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and its learning-rate schedule: a linear warm-up, then a half cosine to a floor.

    Args:
        lr: the peak learning rate.
        weight_decay: AdamW weight decay of the weight matrices (never of norms, biases,
            embeddings, positions or routing tokens).
        betas: AdamW's two moment decay rates.
        warmup_steps: optimizer steps of linear warm-up.
        max_steps: where the cosine reaches min_lr_ratio; null takes the trainer's length.
        min_lr_ratio: the learning rate's floor, as a fraction of lr.
    """

    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: Tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    max_steps: Optional[int] = None
    min_lr_ratio: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(self.betas))
        check_optim_args(**asdict(self))

    @classmethod
    def of(cls, value: Union["OptimConfig", Mapping[str, Any], None]) -> "OptimConfig":
        """An OptimConfig from itself, a mapping of its fields or None (every default)."""
        return coerce(cls, "optim", value)

# parameters named like this are learned tokens or positions, not projections
NO_DECAY_NAMES = frozenset({"routing_tokens", "null_kv", "pos_emb"})
NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm,
                    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def no_weight_decay(module: nn.Module) -> set:
    """ids of the parameters that get no weight decay: every parameter of fewer than 2 dims
    (biases, norm scales), everything owned by an embedding or a norm, and the learned tokens
    named in NO_DECAY_NAMES. A weight shared by an embedding and a head counts as embedding."""
    ids = set()
    for owner in module.modules():
        for name, p in owner.named_parameters(recurse=False):
            if p.ndim < 2 or isinstance(owner, NO_DECAY_MODULES) or name in NO_DECAY_NAMES:
                ids.add(id(p))
    return ids


# wrappers that insert a level into parameter names: FSDP, activation checkpointing, torch.compile
WRAPPER_PARTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def unwrapped_name(name: str) -> str:
    """A parameter's name as it was before FSDP, activation checkpointing or compile wrapped it."""
    for part in WRAPPER_PARTS:
        name = name.replace(part, "")
    return name


def no_weight_decay_names(module: nn.Module) -> frozenset:
    """The (unwrapped) names of the parameters that get no weight decay. Decide this before a
    strategy wraps the module: FSDP flattens every parameter into a 1-D shard, after which
    `ndim < 2` would put all of them in the no-decay group."""
    skip = no_weight_decay(module)
    return frozenset(unwrapped_name(name) for name, p in module.named_parameters() if id(p) in skip)


def param_groups(module: nn.Module, weight_decay: float, no_decay_names: Optional[frozenset] = None) -> list:
    """Two AdamW groups: decayed weight matrices and everything else (weight_decay 0).

    no_decay_names (from no_weight_decay_names on the unwrapped module) decides by name; without
    it the module is inspected as it is now, which is wrong once FSDP has flattened it."""
    names = no_weight_decay_names(module) if no_decay_names is None else no_decay_names
    decay, no_decay = [], []
    for name, p in module.named_parameters():  # shared parameters are yielded once
        if p.requires_grad:
            (no_decay if unwrapped_name(name) in names else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, *, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """The learning-rate multiplier at optimizer step `step` (0-based).

    Rises linearly, (step + 1) / warmup_steps, to 1 over the first warmup_steps steps, then
    follows a half cosine from 1 at step warmup_steps down to min_lr_ratio at max_steps, and
    stays there.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def check_optim_args(*, lr: float, weight_decay: float, betas: Sequence[float], warmup_steps: int,
                     max_steps: Optional[int], min_lr_ratio: float) -> None:
    """ValueErrors for optimizer settings a YAML config may get wrong."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps <= 0):
        raise ValueError(f"max_steps must be a positive int or None (take the trainer's), got {max_steps!r}")
    if not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")


def configure_adamw(module: nn.Module, trainer, optim: Optional[OptimConfig] = None,
                    no_decay_names: Optional[frozenset] = None) -> dict:
    """What a LightningModule's configure_optimizers returns: AdamW plus the per-step schedule.

    optim.max_steps=None takes the schedule length from trainer.estimated_stepping_batches.
    """
    optim = OptimConfig.of(optim)
    lr, weight_decay, betas, max_steps = optim.lr, optim.weight_decay, optim.betas, optim.max_steps
    warmup_steps, min_lr_ratio = optim.warmup_steps, optim.min_lr_ratio
    if max_steps is None:
        total = trainer.estimated_stepping_batches if trainer is not None else float("inf")
        if not math.isfinite(total):
            raise ValueError("cannot derive the schedule length: set max_steps on the module, or "
                             "trainer.max_steps / trainer.max_epochs")
        max_steps = max(1, int(total))
    optimizer = torch.optim.AdamW(param_groups(module, weight_decay, no_decay_names), lr=lr, betas=tuple(betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps=warmup_steps, max_steps=max_steps,
                                              min_lr_ratio=min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
