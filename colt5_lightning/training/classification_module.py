"""Classification: one training loop, two flat-argument front ends.

Batches are {"inputs": ..., "label": (B,) long} plus, for padded token sequences, "mask":
(B, T) bool. Logs train/loss, train/acc (per step), val/loss, val/acc and test/loss,
test/acc (per epoch). A model with several readouts (logits (B, R, C), labels (B, R), as for
passkey digits) is scored per readout in */acc and per sample in */exact_acc (all R right).

- SequenceClassificationModule builds a CoLT5SequenceClassifier (ListOps: inputs are token
  ids (B, T)).
- ImageClassificationModule builds a CoLT5ImageClassifier (Pathfinder: inputs are images
  (B, C, H, W)).
- ClassificationModule takes any model that maps inputs (and mask) to logits, e.g. from YAML
  through `model: {class_path: ..., init_args: ...}`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Accuracy
from torchmetrics.aggregation import MeanMetric

from ..models.routing_args import routing_args
from ..models import CoLT5ImageClassifier, CoLT5SequenceClassifier
from .optim import check_optim_args, configure_adamw, no_weight_decay_names
from .oracle import oracle_for


class ClassificationModule(pl.LightningModule):
    """Cross-entropy training of `model` (inputs[, mask] -> logits (B, num_classes)).
    oracle_routing=True routes each batch's "route_mask" tokens by hand (a diagnostic)."""

    def __init__(self, model: nn.Module, num_classes: int, lr: float = 1e-3, weight_decay: float = 0.05,
                 betas: Tuple[float, float] = (0.9, 0.98), warmup_steps: int = 100,
                 max_steps: Optional[int] = None, min_lr_ratio: float = 0.01, oracle_routing: bool = False):
        super().__init__()
        # the subclasses' flat arguments are collected too; a passed-in model is saved in the weights
        self.save_hyperparameters(ignore=["model"])
        check_optim_args(lr=lr, weight_decay=weight_decay, betas=betas, warmup_steps=warmup_steps,
                         max_steps=max_steps, min_lr_ratio=min_lr_ratio)
        self.model = model
        self.no_decay_names = no_weight_decay_names(model)  # decided before any strategy wraps the model
        self.oracle_routing = bool(oracle_routing)
        self.optim_args = dict(lr=lr, weight_decay=weight_decay, betas=betas, warmup_steps=warmup_steps,
                               max_steps=max_steps, min_lr_ratio=min_lr_ratio)
        self.train_acc = Accuracy(task="multiclass", num_classes=num_classes)
        self.val_acc = Accuracy(task="multiclass", num_classes=num_classes)
        self.test_acc = Accuracy(task="multiclass", num_classes=num_classes)
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_exact = MeanMetric()
        self.test_exact = MeanMetric()

    def forward(self, inputs: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.model(inputs) if mask is None else self.model(inputs, mask)

    def _step(self, batch: dict) -> Tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits in torchmetrics' layout: (B, C), or (B, C, R) for R readouts."""
        with oracle_for(self.model, batch, self.oracle_routing):
            logits = self(batch["inputs"], batch.get("mask"))
        if logits.ndim == 3:
            logits = logits.transpose(1, 2)
        return F.cross_entropy(logits.float(), batch["label"]), logits

    @staticmethod
    def _exact(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """(B,) float: 1 where every readout of the sample is right."""
        right = logits.argmax(1) == label
        return right.flatten(1).all(-1).float() if right.ndim > 1 else right.float()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, logits = self._step(batch)
        self.train_acc(logits, batch["label"])
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=True, on_epoch=False)
        if logits.ndim == 3:
            self.log("train/exact_acc", self._exact(logits, batch["label"]).mean(), on_step=True, on_epoch=False)
        return loss

    def _evaluate(self, batch: dict, stage: str) -> None:
        loss, logits = self._step(batch)
        getattr(self, f"{stage}_loss").update(loss, weight=batch["label"].shape[0])
        getattr(self, f"{stage}_acc").update(logits, batch["label"])
        if logits.ndim == 3:
            getattr(self, f"{stage}_exact").update(self._exact(logits, batch["label"]))

    def _log_epoch(self, stage: str) -> None:
        loss_metric, acc_metric = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_acc")
        exact = getattr(self, f"{stage}_exact")
        metrics = {f"{stage}/loss": loss_metric.compute(), f"{stage}/acc": acc_metric.compute()}
        if exact.update_count:
            metrics[f"{stage}/exact_acc"] = exact.compute()
        self.log_dict(metrics, prog_bar=stage == "val", sync_dist=True)
        for metric in (loss_metric, acc_metric, exact):
            metric.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        return configure_adamw(self.model, self.trainer, **self.optim_args, no_decay_names=self.no_decay_names)


class SequenceClassificationModule(ClassificationModule):
    """Token-sequence classification (ListOps) with a CoLT5SequenceClassifier built from flat
    args (see that class), then the optimizer's (see training.optim)."""

    def __init__(self, vocab_size: int, num_classes: int, max_seq_len: int = 2048, dim: int = 256,
                 depth: int = 4, num_heavy_attn_tokens_q: int = 64, num_heavy_attn_tokens_kv: int = 64,
                 num_heavy_ff_tokens: int = 64, light_dim_head: int = 64, light_heads: int = 4,
                 light_window_size: int = 64, heavy_dim_head: int = 64, heavy_heads: int = 4,
                 light_ff_mult: float = 0.5, heavy_ff_mult: float = 4.0, num_routed_kv: int = 1,
                 router_straight_through: bool = False, router_type: str = "coor_descent",
                 router_kwargs: Optional[dict] = None, kv_scaling: str = "inputs", heavy: bool = True, light_position: str = "none", dense: bool = False,
                 num_readout: int = 0, positions: str = "start",
                 lr: float = 1e-3, weight_decay: float = 0.05, betas: Tuple[float, float] = (0.9, 0.98),
                 warmup_steps: int = 100, max_steps: Optional[int] = None, min_lr_ratio: float = 0.01,
                 oracle_routing: bool = False):
        model = CoLT5SequenceClassifier(vocab_size, num_classes, max_seq_len, dim, depth,
                                        **routing_args(locals()), dense=dense, light_position=light_position,
                                        num_readout=num_readout, positions=positions)
        super().__init__(model, num_classes, lr=lr, weight_decay=weight_decay, betas=betas,
                         warmup_steps=warmup_steps, max_steps=max_steps, min_lr_ratio=min_lr_ratio,
                         oracle_routing=oracle_routing)


class ImageClassificationModule(ClassificationModule):
    """Image classification (Pathfinder) with a CoLT5ImageClassifier built from flat args (see
    that class), then the optimizer's (see training.optim)."""

    def __init__(self, image_size: int = 32, in_channels: int = 1, num_classes: int = 2, patch_size: int = 1,
                 dim: int = 128, depth: int = 4, num_heavy_attn_tokens_q: int = 64,
                 num_heavy_attn_tokens_kv: int = 64, num_heavy_ff_tokens: int = 64, light_dim_head: int = 32,
                 light_heads: int = 4, light_window_size: int = 8, heavy_dim_head: int = 32,
                 heavy_heads: int = 4, light_ff_mult: float = 0.5, heavy_ff_mult: float = 4.0,
                 num_routed_kv: int = 1, router_straight_through: bool = False,
                 router_type: str = "coor_descent", router_kwargs: Optional[dict] = None,
                 kv_scaling: str = "inputs", heavy: bool = True, dense: bool = False,
                 lr: float = 1e-3, weight_decay: float = 0.05, betas: Tuple[float, float] = (0.9, 0.98),
                 warmup_steps: int = 100, max_steps: Optional[int] = None, min_lr_ratio: float = 0.01):
        model = CoLT5ImageClassifier(image_size, in_channels, num_classes, patch_size, dim, depth,
                                     **routing_args(locals()), dense=dense)
        super().__init__(model, num_classes, lr=lr, weight_decay=weight_decay, betas=betas,
                         warmup_steps=warmup_steps, max_steps=max_steps, min_lr_ratio=min_lr_ratio)
