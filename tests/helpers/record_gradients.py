"""A callback for multi-process tests: writes each rank's first training loss and the gradients
it is about to step with (after DDP has averaged them) to `<path>.rank<N>`."""
import lightning.pytorch as pl
import torch


class RecordFirstGradients(pl.Callback):
    def __init__(self, path: str):
        self.path = path
        self.loss = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.loss is None:
            self.loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)
            self.input_ids = batch["input_ids"].clone()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == 0:
            grads = {name: p.grad.detach().clone() for name, p in pl_module.named_parameters() if p.grad is not None}
            self.grads = grads

    def on_train_end(self, trainer, pl_module):
        torch.save({"loss": self.loss, "grads": self.grads, "input_ids": self.input_ids}, f"{self.path}.rank{trainer.global_rank}")
