"""LanguageModelModule: trains CoLT5LanguageModel on next-token prediction.

Batches are {"input_ids": (B, T) long, "targets": (B, T) long}, targets -100 where unscored.
Logs train/loss every step and, per validation epoch, val/loss (mean over scored tokens),
val/bpb (val/loss / ln 2: bits per token, which is bits per byte for the byte vocabulary) and
val/ppl (exp val/loss). After each validation epoch it samples `sample_length` tokens after
`sample_prompt` (UTF-8 bytes), logs the text to TensorBoard when a TensorBoardLogger is
attached, and keeps it in `last_sample`.
"""
from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import asdict
from typing import List, Optional, Tuple, Union

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.aggregation import MeanMetric

from .. import _checks
from ..models import CoLT5LanguageModel, RoutingConfig
from .compile import attach_compiled
from .optim import OptimConfig, configure_adamw, no_weight_decay_names
from .oracle import oracle_for
from ..routing.oracle import ROUTER_KINDS
from ..routing.loss_guidance import (RecordedScores, loss_guided_routing_loss, recording_router_scores,
                                     token_surprise)

log = logging.getLogger(__name__)


class LanguageModelModule(pl.LightningModule):
    """Next-token training of a CoLT5LanguageModel, with validation metrics and samples.

    Args:
        vocab_size: tokens in the vocabulary (256 for bytes; linked from the data).
        seq_len: the model's max_seq_len: the longest context it trains on and generates from
            (linked from the data).
        dim: model width.
        depth: routed blocks.
        routing: the routed blocks' settings (RoutingConfig), one `routing:` block.
        tie_embeddings: the output head shares the token embedding.
        dense: dense blocks of the same width and depth instead of routed ones (the baseline).
        absolute_positions: a learned position table; false leaves positions to causal masking
            and routing.light_position.
        optim: AdamW and its schedule (OptimConfig), one `optim:` block.
        sample_prompt: the prompt of the sample drawn after each validation (UTF-8 bytes).
        sample_length: bytes sampled after each validation; 0 draws none.
        sample_temperature: sampling temperature; 0 is greedy.
        sample_top_k: sample among the k most likely tokens; null samples among all.
        sample_seed: seed of the sampling generator.
        oracle_routing: route each batch's "route_mask" tokens by hand (a diagnostic, see
            routing.oracle): true for every router, or a list of router kinds (q, kv, ff).
        exact_match: also log train/exact_acc and val/exact_acc, the share of samples whose
            scored targets are all the most likely token (passkey: the greedy key is exact).
        loss_guided_routing: weight of a loss that teaches query and feed-forward routers to rank
            positions by next-token loss, and key/value routers by surprise (routing.loss_guidance;
            logged as train/routing_guidance); ignored by models without routers.
        oracle_steps: route by hand only for the first N training steps, then learn (validation
            uses the learned routers from step N on).
        compile: torch.compile the model's forward for training and validation: off, default,
            reduce-overhead (CUDA graphs), max-autotune, or aot_eager (a quick check that it compiles).
    """

    # settings a run started from a checkpoint may change (training.resume): the rest define the model
    settings_a_resume_may_change = ("optim", "compile", "sample_prompt", "sample_length", "sample_temperature",
                                    "sample_top_k", "sample_seed", "oracle_routing", "oracle_steps",
                                    "loss_guided_routing", "exact_match")

    def __init__(self, vocab_size: int = 256, seq_len: int = 1024, dim: int = 256, depth: int = 4,
                 routing: RoutingConfig = RoutingConfig(), tie_embeddings: bool = True, dense: bool = False,
                 absolute_positions: bool = True, optim: OptimConfig = OptimConfig(),
                 sample_prompt: str = "def ", sample_length: int = 128, sample_temperature: float = 0.8,
                 sample_top_k: Optional[int] = 32, sample_seed: int = 0,
                 oracle_routing: Union[bool, List[str]] = False,
                 exact_match: bool = False, loss_guided_routing: float = 0.0,
                 oracle_steps: Optional[int] = None, compile: str = "off"):
        super().__init__()
        self.routing, self.optim = RoutingConfig.of(routing), OptimConfig.of(optim)
        routing, optim = asdict(self.routing), asdict(self.optim)  # plain data: checkpoints load with weights_only
        self.save_hyperparameters()
        if not sample_temperature >= 0:
            raise ValueError(f"sample_temperature must be >= 0 (0 = greedy), got {sample_temperature}")
        if sample_top_k is not None and (isinstance(sample_top_k, bool) or not isinstance(sample_top_k, int)
                                         or sample_top_k <= 0):
            raise ValueError(f"sample_top_k must be a positive int or null, got {sample_top_k!r}")
        if not isinstance(sample_length, int) or sample_length < 0:
            raise ValueError(f"sample_length must be a non-negative int (0 disables samples), got {sample_length!r}")
        _checks.non_negative_number("loss_guided_routing", loss_guided_routing)
        if oracle_steps is not None:
            _checks.positive_int("oracle_steps", oracle_steps)
        if not isinstance(oracle_routing, bool):
            for kind in oracle_routing:
                _checks.one_of("oracle_routing", kind, ROUTER_KINDS)
        self.model = CoLT5LanguageModel(vocab_size=vocab_size, max_seq_len=seq_len, dim=dim, depth=depth,
                                        routing=self.routing, tie_embeddings=tie_embeddings, dense=dense,
                                        absolute_positions=absolute_positions)
        self.no_decay_names = no_weight_decay_names(self.model)  # decided before any strategy wraps the model
        attach_compiled(self, self.model, compile)
        self.val_loss = MeanMetric()
        self.val_exact = MeanMetric()
        self.last_sample: Optional[str] = None

    def forward(self, input_ids: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        model = self.model if self._compiled_model is None else self._compiled_model
        return model(input_ids, mask)

    def _loss(self, batch: dict) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Mean cross-entropy over scored targets, how many targets were scored, per sample
        whether every scored target is the most likely token (the greedy answer is exact; None
        unless exact_match), and
        the routing-guidance loss (None unless training with loss_guided_routing)."""
        guided = self.training and self.hparams.loss_guided_routing > 0
        recorder = recording_router_scores(self.model) if guided else nullcontext(RecordedScores())
        with oracle_for(self.model, batch, self._oracle_now()), recorder as router_scores:
            logits = self(batch["input_ids"], batch.get("mask"))
        targets = batch["targets"]
        token_loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                                     reduction="none").view_as(targets)
        scored = targets != -100
        loss = token_loss.sum() / scored.sum()  # NaN when nothing is scored, as the mean reduction gives
        exact = None  # an argmax over the logits: only worth its time where it is logged
        if self.hparams.exact_match:
            exact = (((logits.argmax(-1) == targets) | ~scored).all(-1) & scored.any(-1)).float()
        guidance = None
        if router_scores.readers or router_scores.memories:
            valid = batch.get("mask")
            valid = torch.ones_like(scored) if valid is None else valid.bool()
            surprise = token_surprise(logits, batch["input_ids"])
            after_first = valid.clone()
            after_first[:, 0] = False
            guidance = torch.stack(
                [loss_guided_routing_loss(s, token_loss, scored, valid) for s in router_scores.readers]
                + [loss_guided_routing_loss(s, surprise, after_first, valid) for s in router_scores.memories]).mean()
        return loss, scored.sum(), exact, guidance

    def _oracle_now(self):
        """oracle_routing, or False once oracle_steps training steps are done."""
        steps = self.hparams.oracle_steps
        if steps is not None and self._trainer is not None and self.trainer.global_step >= steps:
            return False
        return self.hparams.oracle_routing

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _, exact, guidance = self._loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        if self.hparams.exact_match:
            self.log("train/exact_acc", exact.mean(), on_step=True, on_epoch=False)
        if guidance is not None:
            self.log("train/routing_guidance", guidance, on_step=True, on_epoch=False)
            return loss + self.hparams.loss_guided_routing * guidance
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, count, exact, _ = self._loss(batch)
        if count > 0:
            self.val_loss.update(loss, weight=count)
        if exact is not None:
            self.val_exact.update(exact)

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()  # synchronised across processes by torchmetrics
        self.val_loss.reset()
        metrics = {"val/loss": loss, "val/bpb": loss / math.log(2), "val/ppl": torch.exp(loss)}
        if self.hparams.exact_match:
            metrics["val/exact_acc"] = self.val_exact.compute()
        self.val_exact.reset()
        self.log_dict(metrics, prog_bar=True, sync_dist=True)
        if not self.trainer.sanity_checking and self.hparams.sample_length > 0:
            self._log_sample()

    def sample(self, prompt: Optional[str] = None, length: Optional[int] = None,
               temperature: Optional[float] = None, top_k: Optional[int] = None,
               seed: Optional[int] = None, include_prompt: bool = True) -> str:
        """Decodes `length` sampled bytes after `prompt` (UTF-8, undecodable bytes replaced);
        arguments left None take the module's sample_* settings."""
        hp = self.hparams
        prompt = hp.sample_prompt if prompt is None else prompt
        length = hp.sample_length if length is None else length
        ids = list(prompt.encode("utf-8")) or [ord("\n")]
        generator = torch.Generator(device=self.device).manual_seed(hp.sample_seed if seed is None else seed)
        out = self.model.generate(torch.tensor([ids], device=self.device), length,
                                  temperature=hp.sample_temperature if temperature is None else temperature,
                                  top_k=hp.sample_top_k if top_k is None else top_k, generator=generator)
        tokens = out[0].tolist()[0 if include_prompt else len(ids):]
        return bytes(t for t in tokens if t < 256).decode("utf-8", errors="replace")

    def _log_sample(self) -> None:
        # every process samples (a sharded model needs all of them in each forward); rank 0 logs
        if self.hparams.vocab_size < 256:
            return  # not a byte vocabulary: the prompt's bytes would not be tokens
        text = self.sample()
        if not self.trainer.is_global_zero:
            return
        self.last_sample = text
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("samples", "```\n" + text + "\n```", self.global_step)
        log.info("sample at step %d: %r", self.global_step, text)

    def configure_optimizers(self):
        return configure_adamw(self.model, self.trainer, self.optim, no_decay_names=self.no_decay_names)
