"""DiffusionModule: trains a CoLT5ImageDenoiser as a denoising diffusion model (DDPM).

Batches are {"inputs": (B, C, H, W) float in [0, 1], ...}; labels are ignored. Training noises
each image to a random step t of a cosine schedule (Nichol & Dhariwal 2021) and regresses the
noise (train/loss). Validation does the same with a fixed noise and fixed steps per batch, so
val/loss compares across runs and models. After each validation it draws `num_samples` images
by deterministic DDIM sampling in `sample_steps` steps, keeps them in `last_samples` (in [0, 1])
and logs them to TensorBoard (tab Images) when a TensorBoardLogger is attached.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torchmetrics.aggregation import MeanMetric

from .. import _checks
from ..models import CoLT5ImageDenoiser, RoutingConfig
from .compile import attach_compiled
from .optim import OptimConfig, configure_adamw, no_weight_decay_names


def cosine_alpha_bars(num_steps: int, offset: float = 0.008) -> Tensor:
    """(num_steps,) float64: ᾱ_t, the share of the image's variance left at step t = 0 .. T-1, of
    the cosine schedule; each step's β is capped at 0.999 so the last step stays invertible."""
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)


def ddim_steps(num_steps: int, sample_steps: int) -> list:
    """The diffusion steps a DDIM sampler visits, from T-1 down to 0, `sample_steps` of them."""
    return sorted({round(i * (num_steps - 1) / max(1, sample_steps - 1)) for i in range(sample_steps)}, reverse=True)


class DiffusionModule(pl.LightningModule):
    """Denoising diffusion with a routed image denoiser (see the module doc).

    Args:
        image_size: image side in pixels (linked from the data).
        in_channels: image channels (linked from the data).
        patch_size: pixels per patch side.
        dim: model width.
        depth: routed blocks.
        routing: the routed blocks' settings (RoutingConfig), one `routing:` block.
        dense: dense blocks of the same width and depth instead of routed ones (the baseline).
        diffusion_steps: T, the steps of the noise schedule.
        optim: AdamW and its schedule (OptimConfig), one `optim:` block.
        num_samples: images drawn after each validation; 0 draws none.
        sample_steps: DDIM steps per drawn image.
        sample_seed: seed of the drawn images' starting noise.
        compile: torch.compile the denoiser for training and validation: off, default,
            reduce-overhead, max-autotune or aot_eager.
    """

    # settings a run started from a checkpoint may change (training.resume): the rest define the model
    settings_a_resume_may_change = ("optim", "compile", "num_samples", "sample_steps", "sample_seed")

    def __init__(self, image_size: int = 32, in_channels: int = 1, patch_size: int = 1, dim: int = 128,
                 depth: int = 4, routing: RoutingConfig = RoutingConfig(), dense: bool = False,
                 diffusion_steps: int = 1000, optim: OptimConfig = OptimConfig(), num_samples: int = 8,
                 sample_steps: int = 50, sample_seed: int = 0, compile: str = "off"):
        super().__init__()
        self.routing, self.optim = RoutingConfig.of(routing), OptimConfig.of(optim)
        routing, optim = asdict(self.routing), asdict(self.optim)  # plain data: checkpoints load with weights_only
        self.save_hyperparameters()
        _checks.positive_int("diffusion_steps", diffusion_steps)
        _checks.non_negative_int("num_samples", num_samples)
        _checks.positive_int("sample_steps", sample_steps)
        self.model = CoLT5ImageDenoiser(image_size, in_channels, patch_size, dim, depth, routing=self.routing,
                                        dense=dense)
        self.no_decay_names = no_weight_decay_names(self.model)
        attach_compiled(self, self.model, compile)
        self.register_buffer("alpha_bars", cosine_alpha_bars(diffusion_steps).float(), persistent=False)
        self.val_loss = MeanMetric()
        self.last_samples: Optional[Tensor] = None

    def forward(self, noisy: Tensor, steps: Tensor) -> Tensor:
        model = self.model if self._compiled_model is None else self._compiled_model
        return model(noisy, steps)

    def noised(self, clean: Tensor, steps: Tensor, noise: Tensor) -> Tensor:
        """The images at diffusion steps `steps`: √ᾱ_t x0 + √(1 − ᾱ_t) ε."""
        alpha_bar = self.alpha_bars[steps].view(-1, 1, 1, 1).to(clean.dtype)
        return alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise

    def _loss(self, batch: dict, generator: Optional[torch.Generator] = None) -> Tensor:
        images = batch["inputs"]
        clean = images * 2 - 1  # [0, 1] -> [-1, 1]
        b = clean.shape[0]
        steps = torch.randint(0, len(self.alpha_bars), (b,), generator=generator,
                              device="cpu" if generator is not None else clean.device).to(clean.device)
        noise = torch.randn(clean.shape, generator=generator,
                            device="cpu" if generator is not None else clean.device).to(clean)
        return F.mse_loss(self(self.noised(clean, steps, noise), steps).float(), noise.float())

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        generator = torch.Generator().manual_seed(batch_idx)  # the same steps and noise every validation
        self.val_loss.update(self._loss(batch, generator), weight=batch["inputs"].shape[0])

    def on_validation_epoch_end(self) -> None:
        self.log("val/loss", self.val_loss.compute(), prog_bar=True, sync_dist=True)
        self.val_loss.reset()
        if self.trainer.sanity_checking or self.hparams.num_samples == 0 or not self.trainer.is_global_zero:
            return
        self.last_samples = self.sample(self.hparams.num_samples)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_images("samples", self.last_samples, self.global_step)

    @torch.no_grad()
    def sample(self, num: int, sample_steps: Optional[int] = None, seed: Optional[int] = None) -> Tensor:
        """(num, C, H, W) images in [0, 1], by deterministic DDIM (η = 0) from Gaussian noise."""
        sample_steps = self.hparams.sample_steps if sample_steps is None else sample_steps
        seed = self.hparams.sample_seed if seed is None else seed
        c, side = self.hparams.in_channels, self.hparams.image_size
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(num, c, side, side, generator=generator).to(self.device)
        was_training = self.model.training
        self.model.eval()
        path = ddim_steps(len(self.alpha_bars), sample_steps)
        for i, t in enumerate(path):
            steps = torch.full((num,), t, device=self.device, dtype=torch.long)
            noise = self.model(x, steps).float()
            alpha_bar = self.alpha_bars[t]
            clean = ((x - (1 - alpha_bar).sqrt() * noise) / alpha_bar.sqrt()).clamp(-1, 1)
            alpha_bar_next = self.alpha_bars[path[i + 1]] if i + 1 < len(path) else torch.ones_like(alpha_bar)
            x = alpha_bar_next.sqrt() * clean + (1 - alpha_bar_next).sqrt() * noise
        self.model.train(was_training)
        return ((x + 1) / 2).clamp(0, 1)

    def configure_optimizers(self):
        return configure_adamw(self.model, self.trainer, self.optim, no_decay_names=self.no_decay_names)
