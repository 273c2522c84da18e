"""NonFiniteGuard: stops training at the first non-finite loss or gradient, naming where.

A diverged run that trains on with NaN loss reports chance-level metrics, saves NaN weights over
the last good checkpoint and exits 0. This callback raises NonFiniteError instead:
- before the optimizer step, when a gradient is NaN or infinite, naming the parameters whose
  gradients are (e.g. `model.blocks.0.attn.q_router.routing_tokens`), so the weights are never
  updated with it;
- after the step, when the loss is not finite;
- in the forward pass, when routing scores are not finite: the routers raise NonFiniteError
  themselves, and this callback gives each its module path to name.
LastCheckpoint does not save on this error, so last.ckpt stays the last good state.

Each check reads one value on the host; `check_every_n_steps` spaces them out where that matters.
"""
from __future__ import annotations

from typing import List

import lightning.pytorch as pl
import torch
from torch import Tensor

from .._checks import NonFiniteError


class NonFiniteGuard(pl.Callback):
    """Raises NonFiniteError at the first non-finite training loss or gradient (see module doc)."""

    def __init__(self, check_every_n_steps: int = 1, names_shown: int = 5):
        if isinstance(check_every_n_steps, bool) or not isinstance(check_every_n_steps, int) or check_every_n_steps < 0:
            raise ValueError(f"check_every_n_steps must be a non-negative int (0: never), got {check_every_n_steps!r}")
        self.check_every_n_steps = check_every_n_steps
        self.names_shown = names_shown
        self._routers: list = []

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._routers = [(path, module) for path, module in pl_module.named_modules()
                         if hasattr(module, "label") and hasattr(module, "routing_tokens")]

    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch,
                             batch_idx: int) -> None:
        for path, router in self._routers:
            router.label = f"{path} at training step {trainer.global_step}"

    def _due(self, trainer: "pl.Trainer") -> bool:
        return self.check_every_n_steps > 0 and trainer.global_step % self.check_every_n_steps == 0

    def on_before_optimizer_step(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", optimizer) -> None:
        # under a GradScaler (16-mixed) inf gradients are routine: the scaler skips the step itself
        if not self._due(trainer) or getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        finite = not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum()))
        # each process may hold only a shard: all stop if any finds a non-finite gradient
        if trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        bad = non_finite_gradients(pl_module)
        shown = ", ".join(bad[: self.names_shown]) + (f" and {len(bad) - self.names_shown} more"
                                                     if len(bad) > self.names_shown else "")
        raise NonFiniteError(f"non-finite gradient at step {trainer.global_step} in {shown}; the weights were "
                             f"not updated and last.ckpt was kept. {ADVICE}")

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs, batch,
                           batch_idx: int) -> None:
        if not self._due(trainer):
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        finite = not isinstance(loss, Tensor) or bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(finite, all=True):
            value = float(loss.detach().float().reshape(-1)[0]) if isinstance(loss, Tensor) else float("nan")
            raise NonFiniteError(f"training loss is {value:g} at step "
                                 f"{trainer.global_step} (batch {batch_idx}); last.ckpt was kept. {ADVICE}")


ADVICE = ("Lower --model.init_args.optim.lr, set --trainer.gradient_clip_val, or check the data; resume from "
          "the last good checkpoint with --ckpt_path last.")


def non_finite_gradients(module: torch.nn.Module) -> List[str]:
    """Names of the parameters whose gradient holds a NaN or an infinity."""
    return [name for name, p in module.named_parameters()
            if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
