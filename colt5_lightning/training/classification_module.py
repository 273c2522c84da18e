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

from contextlib import nullcontext
from dataclasses import asdict
from typing import Optional, Tuple

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Accuracy
from torchmetrics.aggregation import MeanMetric

from .. import _checks
from ..models import CoLT5ImageClassifier, CoLT5SequenceClassifier, RoutingConfig
from .compile import attach_compiled
from .optim import OptimConfig, configure_adamw, no_weight_decay_names
from .oracle import oracle_for
from ..routing.loss_guidance import RecordedScores, recording_router_scores, route_supervision_loss


class ClassificationModule(pl.LightningModule):
    """Cross-entropy training of `model` (inputs[, mask] -> logits (B, num_classes)).
    oracle_routing=True routes each batch's "route_mask" tokens by hand (a diagnostic)."""

    # settings a run started from a checkpoint may change (training.resume): the rest define the model
    settings_a_resume_may_change = ("optim", "compile", "oracle_routing", "route_supervision")

    def __init__(self, model: nn.Module, num_classes: int, optim: OptimConfig = OptimConfig(),
                 oracle_routing: bool = False, compile: str = "off", route_supervision: float = 0.0):
        super().__init__()
        self.optim = OptimConfig.of(optim)
        optim = asdict(self.optim)  # plain data: checkpoints load with weights_only
        # the subclasses' arguments are collected too; a passed-in model is saved in the weights
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.no_decay_names = no_weight_decay_names(model)  # decided before any strategy wraps the model
        attach_compiled(self, model, compile)
        self.oracle_routing = bool(oracle_routing)
        self.route_supervision = _checks.non_negative_number("route_supervision", route_supervision)
        self.train_acc = Accuracy(task="multiclass", num_classes=num_classes)
        self.val_acc = Accuracy(task="multiclass", num_classes=num_classes)
        self.test_acc = Accuracy(task="multiclass", num_classes=num_classes)
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_exact = MeanMetric()
        self.test_exact = MeanMetric()

    def forward(self, inputs: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        model = self.model if self._compiled_model is None else self._compiled_model
        return model(inputs) if mask is None else model(inputs, mask)

    def _step(self, batch: dict) -> Tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits in torchmetrics' layout: (B, C), or (B, C, R) for R readouts."""
        supervised = self.training and self.route_supervision > 0
        if supervised and "route_mask" not in batch:
            raise ValueError("route_supervision needs batches with a 'route_mask' (the tokens that hold the "
                             "evidence, as MatchingMarksDataModule and PasskeyReadoutDataModule give)")
        recorder = recording_router_scores(self.model) if supervised else nullcontext(RecordedScores())
        with oracle_for(self.model, batch, self.oracle_routing), recorder as router_scores:
            logits = self(batch["inputs"], batch.get("mask"))
        if logits.ndim == 3:
            logits = logits.transpose(1, 2)
        loss = F.cross_entropy(logits.float(), batch["label"])
        scores = router_scores.readers + router_scores.memories
        if scores:
            supervision = route_supervision_loss(scores, batch["route_mask"], batch.get("mask"))
            self.log("train/route_supervision", supervision, on_step=True, on_epoch=False)
            loss = loss + self.route_supervision * supervision
        return loss, logits

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
        return configure_adamw(self.model, self.trainer, self.optim, no_decay_names=self.no_decay_names)


class SequenceClassificationModule(ClassificationModule):
    """Token-sequence classification (ListOps, passkey readout) with a CoLT5SequenceClassifier.

    Args:
        vocab_size: tokens in the vocabulary (linked from the data).
        num_classes: classes per readout (linked from the data).
        max_seq_len: the longest input (linked from the data).
        dim: model width.
        depth: routed blocks.
        routing: the routed blocks' settings (RoutingConfig), one `routing:` block.
        dense: dense blocks of the same width and depth instead of routed ones (the baseline).
        num_readout: 0 classifies the mean of the tokens; r > 0 classifies each of the last r
            positions (passkey digits; linked from the data).
        positions: the learned position table indexed from the "start" or the "end", or "none".
        optim: AdamW and its schedule (OptimConfig), one `optim:` block.
        oracle_routing: route each batch's "route_mask" tokens by hand (a diagnostic).
        route_supervision: weight of a loss that trains every router to score the batch's
            "route_mask" tokens highest (supervised routing: the routers still route by themselves).
        compile: torch.compile the model's forward: off, default, reduce-overhead (CUDA graphs),
            max-autotune, or aot_eager (a quick check that it compiles).
    """

    def __init__(self, vocab_size: int, num_classes: int, max_seq_len: int = 2048, dim: int = 256,
                 depth: int = 4, routing: RoutingConfig = RoutingConfig(), dense: bool = False,
                 num_readout: int = 0, positions: str = "start", optim: OptimConfig = OptimConfig(),
                 oracle_routing: bool = False, compile: str = "off", route_supervision: float = 0.0):
        config = RoutingConfig.of(routing)
        routing, optim = asdict(config), asdict(OptimConfig.of(optim))  # plain data in the hyper-parameters
        model = CoLT5SequenceClassifier(vocab_size, num_classes, max_seq_len, dim, depth, routing=config,
                                        dense=dense, num_readout=num_readout, positions=positions)
        super().__init__(model, num_classes, optim=optim, oracle_routing=oracle_routing, compile=compile,
                         route_supervision=route_supervision)


class ImageClassificationModule(ClassificationModule):
    """Image classification (Pathfinder) with a CoLT5ImageClassifier.

    Args:
        image_size: side of the square input images (linked from the data).
        in_channels: image channels (linked from the data).
        num_classes: classes (linked from the data).
        patch_size: side of the patches the stem turns into feature-map cells.
        dim: model width.
        depth: routed blocks.
        routing: the routed blocks' settings (RoutingConfig), one `routing:` block; the light
            window is a light_window_size × light_window_size tile of the feature map.
        dense: dense blocks over the flattened map instead of routed ones (the baseline).
        readout: classify the mean of the patches ("mean") or the top-left patch ("corner"; linked
            from the data where it says, as MarkColourDataModule does).
        optim: AdamW and its schedule (OptimConfig), one `optim:` block.
        oracle_routing: route each batch's "route_mask" pixels by hand (a diagnostic; with patch_size 1,
            as MatchingMarksDataModule gives them).
        route_supervision: weight of a loss that trains every router to score the batch's
            "route_mask" pixels highest (supervised routing: the routers still route by themselves).
        compile: torch.compile the model's forward: off, default, reduce-overhead (CUDA graphs),
            max-autotune, or aot_eager (a quick check that it compiles).
    """

    def __init__(self, image_size: int = 32, in_channels: int = 1, num_classes: int = 2, patch_size: int = 1,
                 dim: int = 128, depth: int = 4, routing: RoutingConfig = RoutingConfig(), dense: bool = False,
                 readout: str = "mean", optim: OptimConfig = OptimConfig(), oracle_routing: bool = False,
                 compile: str = "off", route_supervision: float = 0.0):
        config = RoutingConfig.of(routing)
        routing, optim = asdict(config), asdict(OptimConfig.of(optim))  # plain data in the hyper-parameters
        model = CoLT5ImageClassifier(image_size, in_channels, num_classes, patch_size, dim, depth,
                                     routing=config, dense=dense, readout=readout)
        super().__init__(model, num_classes, optim=optim, oracle_routing=oracle_routing, compile=compile,
                         route_supervision=route_supervision)
