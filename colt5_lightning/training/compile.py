"""`compile`: the LightningModules' switch for torch.compile.

The model's forward is compiled for training and validation steps; generation (the LM's
samples, whose length grows token by token) stays eager, so it does not recompile at every
length. The compiled wrapper is kept outside the module tree, so parameter names, state dicts
and checkpoints are the same compiled or not.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from .. import _checks

# torch.compile's modes, plus "aot_eager": graph capture and autograd tracing without code
# generation, which checks in seconds that a model compiles
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "aot_eager")


def compiled(model: nn.Module, mode: str) -> Optional[Callable]:
    """torch.compile(model) in the given mode, or None for "off"."""
    _checks.one_of("compile", mode, COMPILE_MODES)
    if mode == "off":
        return None
    if mode == "aot_eager":
        return torch.compile(model, backend="aot_eager")
    return torch.compile(model, mode=mode)


def attach_compiled(module: nn.Module, model: nn.Module, mode: str) -> None:
    """module._compiled_model = compiled(model, mode), without registering it as a submodule."""
    object.__setattr__(module, "_compiled_model", compiled(model, mode))
