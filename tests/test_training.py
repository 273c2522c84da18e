"""LightningModules train on tiny synthetic batches; the schedule and weight-decay split."""
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from colt5_lightning.training import (ImageClassificationModule, LanguageModelModule,
                                      SequenceClassificationModule)
from colt5_lightning.models import RoutingConfig
from colt5_lightning.training.optim import OptimConfig, configure_adamw, no_weight_decay, param_groups, warmup_cosine

ROUTING = RoutingConfig(num_heavy_attn_tokens_q=8, num_heavy_attn_tokens_kv=8, num_heavy_ff_tokens=8,
                        light_dim_head=8, light_heads=2, light_window_size=8, heavy_dim_head=8, heavy_heads=2)
TINY = dict(dim=32, depth=2, routing=ROUTING)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny ops run fastest on one thread; extra threads only spin on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def fit(module, train, val=None, steps=30, logger=False, **trainer_kwargs):
    recorder = LossRecorder()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder],
                        limit_val_batches=None if val is None else 2, **trainer_kwargs)
    trainer.fit(module, train, val)
    return trainer, recorder.losses


def falls(losses, window=4):
    return sum(losses[-window:]) / window < 0.8 * sum(losses[:window]) / window


def lm_batches(n=64, seq_len=32, vocab=256, seed=0):
    """A cyclic pattern from a random start: easy to learn, impossible to know in advance."""
    g = torch.Generator().manual_seed(seed)
    pattern = torch.tensor([ord(c) for c in "def f(x): return x\n"])
    starts = torch.randint(0, len(pattern), (n,), generator=g)
    rows = [pattern[(s + torch.arange(seq_len + 1)) % len(pattern)] % vocab for s in starts]
    return [{"input_ids": r[:-1].clone(), "targets": r[1:].clone()} for r in rows]


@pytest.mark.parametrize("dense", [False, True], ids=["routed", "dense"])
def test_language_model_loss_falls(dense):
    torch.manual_seed(0)
    module = LanguageModelModule(seq_len=32, **TINY, dense=dense, optim=dict(lr=3e-3, warmup_steps=3), sample_length=0)
    _, losses = fit(module, DataLoader(lm_batches(), batch_size=8, shuffle=True), steps=30)
    assert falls(losses), losses


def test_language_model_validation_metrics_and_sample():
    torch.manual_seed(0)
    module = LanguageModelModule(seq_len=32, **TINY, optim=dict(lr=3e-3, warmup_steps=2), sample_length=12,
                                 sample_prompt="def ")
    data = lm_batches(16)
    data[0]["targets"][:10] = -100  # unscored positions are ignored
    loader = DataLoader(data, batch_size=4)
    trainer, _ = fit(module, loader, loader, steps=4, num_sanity_val_steps=0, val_check_interval=4)
    metrics = trainer.callback_metrics
    loss = float(metrics["val/loss"])
    assert math.isfinite(loss)
    assert float(metrics["val/bpb"]) == pytest.approx(loss / math.log(2), rel=1e-5)
    assert float(metrics["val/ppl"]) == pytest.approx(math.exp(loss), rel=1e-5)
    assert "train/loss" in trainer.logged_metrics
    assert isinstance(module.last_sample, str) and module.last_sample.startswith("def ")
    assert len(module.last_sample.encode("utf-8", errors="replace")) >= 4


def test_language_model_sample_is_not_drawn_in_sanity_check():
    module = LanguageModelModule(seq_len=32, **TINY, sample_length=4)
    seen = []

    class Spy(L.Callback):
        def on_sanity_check_end(self, trainer, pl_module):
            seen.append(pl_module.last_sample)

    loader = DataLoader(lm_batches(4), batch_size=4)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Spy()],
                        num_sanity_val_steps=1, limit_val_batches=1)
    trainer.fit(module, loader, loader)
    assert seen == [None]


def test_language_model_text_sample_reaches_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    module = LanguageModelModule(seq_len=32, **TINY, sample_length=4)
    loader = DataLoader(lm_batches(4), batch_size=4)
    logger = TensorBoardLogger(tmp_path, name="lm")
    fit(module, loader, loader, steps=1, logger=logger, num_sanity_val_steps=0)
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "samples/text_summary" in events.Tags()["tensors"]


def test_language_model_checkpoint_round_trip(tmp_path):
    module = LanguageModelModule(seq_len=32, **TINY, sample_length=0)
    trainer, _ = fit(module, DataLoader(lm_batches(8), batch_size=4), steps=2)
    trainer.save_checkpoint(tmp_path / "lm.ckpt")
    restored = LanguageModelModule.load_from_checkpoint(tmp_path / "lm.ckpt")
    ids = torch.randint(0, 256, (1, 32))
    torch.testing.assert_close(restored.eval()(ids), module.eval()(ids))


def sequence_batches(n=96, seq_len=24, seed=0):
    """Class 1 draws its tokens from 4-6, class 0 from 7-9; the padding takes the other class's
    tokens, so only a model that respects the mask reads the class off the sequence."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(12, seq_len + 1, (1,), generator=g))
        label = int(torch.randint(0, 2, (1,), generator=g))
        own, other = (4, 7) if label else (7, 4)
        ids = torch.randint(own, own + 3, (seq_len,), generator=g)
        ids[length:] = torch.randint(other, other + 3, (seq_len - length,), generator=g)
        out.append({"inputs": ids, "label": torch.tensor(label), "mask": torch.arange(seq_len) < length})
    return out


@pytest.mark.parametrize("dense", [False, True], ids=["routed", "dense"])
def test_sequence_classifier_loss_falls(dense):
    torch.manual_seed(0)
    module = SequenceClassificationModule(vocab_size=10, num_classes=2, max_seq_len=24, **TINY, dense=dense,
                                          optim=dict(lr=3e-3, warmup_steps=3))
    data = sequence_batches()
    trainer, losses = fit(module, DataLoader(data, batch_size=16, shuffle=True),
                          DataLoader(data, batch_size=16), steps=30, num_sanity_val_steps=0)
    assert falls(losses, window=6), losses
    assert 0.0 <= float(trainer.callback_metrics["val/acc"]) <= 1.0
    assert {"val/loss", "val/acc", "train/loss", "train/acc"} <= set(trainer.callback_metrics)


def image_batches(n=64, channels=3, seed=0):
    """Label 1 when the top half is brighter than the bottom half."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, channels, 16, 16, generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    images[:, :, :8] += (labels.float() * 2 - 1).view(n, 1, 1, 1)
    return [{"inputs": x, "label": y} for x, y in zip(images, labels)]


@pytest.mark.parametrize("dense", [False, True], ids=["routed", "dense"])
def test_image_classifier_loss_falls(dense):
    torch.manual_seed(0)
    module = ImageClassificationModule(image_size=16, in_channels=3, num_classes=2, patch_size=2,
                                       dim=32, depth=2, routing=ROUTING.replace(light_window_size=4), dense=dense,
                                       optim=dict(lr=3e-3, warmup_steps=3))
    _, losses = fit(module, DataLoader(image_batches(), batch_size=16, shuffle=True), steps=24)
    assert falls(losses, window=4), losses


def test_warmup_cosine_values():
    f = lambda step: warmup_cosine(step, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)  # noqa: E731
    assert f(0) == pytest.approx(0.1)
    assert f(4) == pytest.approx(0.5)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55)  # half way down the cosine
    assert f(110) == pytest.approx(0.1)
    assert f(500) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 120))


def test_scheduler_steps_the_learning_rate():
    module = torch.nn.Linear(4, 4)
    config = configure_adamw(module, None, OptimConfig(lr=1.0, weight_decay=0.1, betas=(0.9, 0.95),
                                                         warmup_steps=2, max_steps=6, min_lr_ratio=0.0))
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(7):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.853553, 0.5, 0.146447, 0.0], abs=1e-5)


def test_schedule_length_comes_from_the_trainer():
    module = LanguageModelModule(seq_len=32, **TINY, optim=dict(lr=1e-3, warmup_steps=1, max_steps=None,
                                                                    min_lr_ratio=0.25), sample_length=0)
    trainer, _ = fit(module, DataLoader(lm_batches(16), batch_size=4), steps=4)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.25e-3)


def test_no_weight_decay_on_norms_biases_embeddings_and_routing_tokens():
    module = LanguageModelModule(seq_len=32, **TINY, optim=dict(weight_decay=0.1), sample_length=0)
    names = {id(p): n for n, p in module.model.named_parameters()}
    decay, no_decay = param_groups(module.model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert len(decayed) + len(kept) == len(names)  # each parameter exactly once (tied head counted once)
    assert "tok_emb.weight" in kept and "pos_emb" in kept
    assert any(n.endswith("routing_tokens") for n in kept)
    assert not any(n.endswith("routing_tokens") or n.endswith(".bias") or ".norm." in n or "null_kv" in n
                   for n in decayed)
    assert "encoder.blocks.0.ff.heavy_ff.0.weight" in decayed
    assert "encoder.blocks.0.attn.heavy.kv_weight" in decayed
    assert no_weight_decay(module.model) == {id(p) for p in no_decay["params"]}


@pytest.mark.parametrize("kwargs, match", [
    (dict(optim=dict(lr=0.0)), "lr"), (dict(optim=dict(warmup_steps=-1)), "warmup_steps"),
    (dict(optim=dict(min_lr_ratio=2.0)), "min_lr_ratio"), (dict(optim=dict(betas=(0.9, 1.5))), "betas"),
    (dict(sample_length=-1), "sample_length"),
], ids=["lr", "warmup", "min_lr", "betas", "sample"])
def test_bad_optimizer_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LanguageModelModule(seq_len=32, **TINY, **kwargs)


class FlatShard(torch.nn.Module):
    """Stands in for an FSDP unit on CPU (FSDP itself needs an accelerator): the wrapped module
    sits under `_fsdp_wrapped_module` and each of its parameters is a flat 1-D copy, as FSDP
    leaves them once sharded."""

    def __init__(self, module):
        super().__init__()
        for owner in list(module.modules()):
            for name, p in list(owner.named_parameters(recurse=False)):
                setattr(owner, name, torch.nn.Parameter(p.detach().flatten()))
        self._fsdp_wrapped_module = module


def test_decay_groups_are_decided_by_name_before_a_strategy_flattens_the_parameters():
    module = LanguageModelModule(seq_len=32, **TINY, optim=dict(weight_decay=0.1), sample_length=0)
    before = [len(g["params"]) for g in param_groups(module.model, 0.1)]
    blocks = module.model.encoder.blocks
    for i in range(len(blocks)):
        blocks[i] = FlatShard(blocks[i])
    assert all(p.ndim <= 1 for p in blocks.parameters())
    assert [len(g["params"]) for g in param_groups(module.model, 0.1)] != before  # inspected now: wrong
    config = configure_adamw(module.model, None, OptimConfig(warmup_steps=1, max_steps=10),
                             no_decay_names=module.no_decay_names)
    assert [len(g["params"]) for g in config["optimizer"].param_groups] == before


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fsdp_keeps_the_decay_groups_of_one_process(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    run = [sys.executable, "-m", "colt5_lightning.cli", "fit", "--config", str(repo / "configs/model/lm/tiny.yaml"),
           "--config", str(repo / "configs/data/passkey.yaml"), "--data.init_args.seq_len", "128",
           "--data.init_args.batch_size", "2", "--data.init_args.val_samples", "2", "--model.init_args.sample_length", "0",
           "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--trainer.limit_val_batches", "0",
           "--trainer.max_steps", "2", "--trainer.callbacks+=helpers.record_groups.RecordOptimizerGroups"]
    env = {**__import__("os").environ, "PYTHONPATH": str(repo / "tests")}
    groups = {}
    for name, extra in {"single": ["--trainer.accelerator", "cpu"],
                        "fsdp": ["--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.strategy",
                                 "colt5_lightning.training.BlockFSDPStrategy"]}.items():
        out = tmp_path / name
        subprocess.run([*run, *extra, "--trainer.callbacks.path", str(out), "--checkpoint.dirpath", str(tmp_path / name)],
                       cwd=tmp_path, env=env, check=True, timeout=600)
        groups[name] = json.loads(Path(f"{out}.rank0").read_text())["groups"]
    assert groups["fsdp"] == groups["single"]


def test_checkpoints_keep_routing_and_optim_as_plain_data_and_load_with_weights_only(tmp_path):
    routing, optim = ROUTING.replace(router_type="sinkhorn"), OptimConfig(lr=5e-4, warmup_steps=1)
    module = LanguageModelModule(seq_len=32, dim=32, depth=2, routing=routing, optim=optim, sample_length=0)
    trainer, _ = fit(module, DataLoader(lm_batches(4), batch_size=4), steps=1)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    saved = torch.load(tmp_path / "m.ckpt", map_location="cpu", weights_only=True)["hyper_parameters"]
    assert saved["routing"]["router_type"] == "sinkhorn" and saved["optim"]["lr"] == 5e-4
    loaded = LanguageModelModule.load_from_checkpoint(tmp_path / "m.ckpt", map_location="cpu")
    assert loaded.routing == routing and loaded.optim == optim
