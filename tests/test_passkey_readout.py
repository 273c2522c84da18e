"""Passkey retrieval read out by an encoder: the data, the multi-readout classifier and the
length curriculum that makes it learnable."""
from __future__ import annotations

import lightning as L
import pytest
import torch

from colt5_lightning.data import PasskeyReadoutDataModule
from colt5_lightning.data.passkey import PLACEHOLDER, make_sample
from colt5_lightning.models import CoLT5SequenceClassifier, RoutingConfig
from colt5_lightning.training import LengthCurriculum, SequenceClassificationModule
from colt5_lightning.data._seeding import TRAIN_STREAM

ROUTING = RoutingConfig(num_heavy_attn_tokens_q=8, num_heavy_attn_tokens_kv=8, num_heavy_ff_tokens=8,
                        light_dim_head=8, light_heads=2, light_window_size=8, heavy_dim_head=8, heavy_heads=2)
TINY = dict(dim=16, depth=1, routing=ROUTING)


def datamodule(**kwargs):
    data = PasskeyReadoutDataModule(**{"seq_len": 160, "batch_size": 2, "val_samples": 4, **kwargs})
    data.setup("fit")
    return data


def test_readout_sample_hides_the_key_behind_placeholders_at_the_end():
    data = datamodule()
    item = data._train[3]
    text = bytes(item["inputs"].tolist()).decode()
    key = make_sample(159, 5, 0, TRAIN_STREAM, 3).key
    assert len(text) == 160
    assert text.endswith("The pass key is " + PLACEHOLDER * 5)
    assert f"The pass key is {key}." in text
    assert item["label"].tolist() == [int(d) for d in key]


def test_training_length_follows_train_len_while_validation_stays_at_seq_len():
    data = datamodule(start_len=110)
    assert data._train[0]["inputs"].shape == (110,)
    data.train_len = 128
    assert data._train[0]["inputs"].shape == (128,)
    assert data._val[0]["inputs"].shape == (160,)


@pytest.mark.parametrize("kwargs, match", [
    (dict(start_len=200), "start_len"),
    (dict(start_len=10), "start_len"),
    (dict(start_len=110, num_workers=1), "num_workers=0"),
])
def test_bad_readout_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PasskeyReadoutDataModule(seq_len=160, **kwargs)


def test_train_len_outside_the_allowed_range_is_refused():
    with pytest.raises(ValueError, match="train_len"):
        datamodule().train_len = 161


@pytest.mark.parametrize("heavy", [True, False])
@pytest.mark.parametrize("positions", ["start", "end", "none"])
def test_classifier_with_readouts_gives_logits_per_readout(heavy, positions):
    model = CoLT5SequenceClassifier(256, 10, max_seq_len=64, num_readout=5, positions=positions, dim=16, depth=1,
                                    routing=ROUTING.replace(light_position="relative", heavy=heavy))
    assert model(torch.randint(0, 256, (2, 64))).shape == (2, 5, 10)
    assert (model.pos_emb is None) == (positions == "none")


def test_positions_from_the_end_give_the_last_token_the_same_embedding_at_every_length():
    model = CoLT5SequenceClassifier(256, 10, max_seq_len=64, num_readout=5, positions="end", **TINY)
    seen = []
    model.encoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0][0, -1]))
    ids = torch.randint(0, 256, (1, 64))
    model(ids)
    model(ids[:, -40:])
    torch.testing.assert_close(seen[0], seen[1])


class LengthRecorder(L.Callback):
    def __init__(self):
        self.lengths = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lengths.append(batch["inputs"].shape[1])


def test_curriculum_moves_to_the_next_length_when_the_metric_reaches_the_threshold():
    """train/loss stays far above 0.01, so each full window of 2 steps meets the threshold."""
    torch.set_num_threads(1)
    data = PasskeyReadoutDataModule(seq_len=160, start_len=110, batch_size=2, val_samples=2)
    module = SequenceClassificationModule(256, 10, max_seq_len=160, num_readout=5, optim=dict(warmup_steps=1), **TINY)
    curriculum = LengthCurriculum([110, 128, 160], metric="train/loss", threshold=0.01, window=2)
    recorder = LengthRecorder()
    trainer = L.Trainer(max_steps=7, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[curriculum, recorder])
    trainer.fit(module, datamodule=data)
    assert recorder.lengths == [110, 110, 128, 128, 160, 160, 160]
    assert curriculum.state_dict()["stage"] == 2


def test_curriculum_state_round_trips():
    curriculum = LengthCurriculum([100, 128], window=3)
    curriculum.load_state_dict({"stage": 1, "recent": [0.5, 0.7], "final_since": 12})
    assert curriculum.state_dict() == {"stage": 1, "recent": [0.5, 0.7], "final_since": 12}


@pytest.mark.parametrize("kwargs, match", [
    (dict(lengths=[]), "lengths"), (dict(lengths=[256, 128]), "ascending"),
    (dict(lengths=[128], threshold=0), "threshold"), (dict(lengths=[128], window=0), "window"),
    (dict(lengths=[128], anneal_steps=-1), "anneal_steps"), (dict(lengths=[128], anneal_to=2.0), "anneal_to"),
])
def test_bad_curriculum_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LengthCurriculum(**kwargs)


def test_exact_accuracy_counts_samples_with_every_readout_right():
    logits = torch.zeros(3, 10, 2)  # (batch, classes, readouts)
    logits[0, 4, :] = 1          # sample 0: both readouts say 4
    logits[1, 4, 0] = 1          # sample 1: first says 4, second says 0
    logits[2, 7, :] = 1
    label = torch.tensor([[4, 4], [4, 4], [4, 4]])
    assert SequenceClassificationModule._exact(logits, label).tolist() == [1.0, 0.0, 0.0]


def test_oracle_routing_needs_a_route_mask_in_the_batch():
    module = SequenceClassificationModule(256, 10, max_seq_len=64, num_readout=5, oracle_routing=True, **TINY)
    with pytest.raises(KeyError, match="route_mask"):
        module._step({"inputs": torch.randint(0, 256, (2, 64)), "label": torch.zeros(2, 5, dtype=torch.long)})


def test_oracle_routing_runs_on_readout_batches():
    data = datamodule()
    module = SequenceClassificationModule(256, 10, max_seq_len=160, num_readout=5, oracle_routing=True, **TINY)
    batch = next(iter(data.train_dataloader()))
    loss, logits = module._step(batch)
    assert torch.isfinite(loss) and logits.shape == (2, 10, 5)


def test_curriculum_lengths_beyond_seq_len_end_at_seq_len():
    torch.set_num_threads(1)
    data = PasskeyReadoutDataModule(seq_len=160, start_len=110, batch_size=2, val_samples=2)
    module = SequenceClassificationModule(256, 10, max_seq_len=160, num_readout=5, optim=dict(warmup_steps=1), **TINY)
    curriculum = LengthCurriculum([110, 128, 4096], metric="train/loss", threshold=0.01, window=1)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[curriculum])
    trainer.fit(module, datamodule=data)
    assert curriculum.lengths == [110, 128, 160] and data.train_len == 160


def test_curriculum_skips_lengths_below_the_data_start_len():
    torch.set_num_threads(1)
    data = PasskeyReadoutDataModule(seq_len=160, start_len=128, batch_size=2, val_samples=2)
    module = SequenceClassificationModule(256, 10, max_seq_len=160, num_readout=5, optim=dict(warmup_steps=1), **TINY)
    recorder = LengthRecorder()
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[LengthCurriculum([110, 128, 160]), recorder])
    trainer.fit(module, datamodule=data)
    assert recorder.lengths == [128, 128]


class LearningRateRecorder(L.Callback):
    """The rate each optimizer step uses (runs after the curriculum's hook)."""

    def __init__(self):
        self.rates = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.rates.append(optimizer.param_groups[0]["lr"])


def test_curriculum_anneals_the_learning_rate_from_the_step_it_reaches_the_last_length():
    """Steps 0-1 at 110, 2-3 at 128, 160 from step 4 on: the rate used falls from there on, by a
    half cosine over 4 steps to 0.1 of the schedule's constant rate, and stays."""
    torch.set_num_threads(1)
    data = PasskeyReadoutDataModule(seq_len=160, start_len=110, batch_size=2, val_samples=2)
    module = SequenceClassificationModule(256, 10, max_seq_len=160, num_readout=5, **TINY,
                                          optim=dict(warmup_steps=0, min_lr_ratio=1.0, lr=1e-3))
    curriculum = LengthCurriculum([110, 128, 160], metric="train/loss", threshold=0.01, window=2,
                                  anneal_steps=4, anneal_to=0.1)
    used = LearningRateRecorder()
    trainer = L.Trainer(max_steps=10, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[curriculum, used])
    trainer.fit(module, datamodule=data)
    factors = [curriculum.lr_factor(step) for step in range(10)]
    assert factors[:5] == [1.0] * 5 and factors[8:] == pytest.approx([0.1, 0.1])
    assert all(a > b for a, b in zip(factors[4:8], factors[5:9]))
    assert used.rates == pytest.approx([1e-3 * f for f in factors])  # scaled, never compounded
