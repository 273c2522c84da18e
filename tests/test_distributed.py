"""Data parallel on real CPU processes (gloo): two processes compute what one computes on the
joined batch (the same loss and, after DDP averages them, the same gradients), and a two-node
torchrun launch trains and checkpoints through the `colt5` command."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, default_collate

from colt5_lightning.models import RoutingConfig
from colt5_lightning.training import LanguageModelModule
from tests.helpers.record_gradients import RecordFirstGradients

REPO = Path(__file__).resolve().parents[1]


def cfg(name: str) -> list:
    return ["--config", str(REPO / name)]


TINY = dict(dim=32, depth=2, sample_length=0,
            routing=RoutingConfig(num_heavy_attn_tokens_q=8, num_heavy_attn_tokens_kv=8, num_heavy_ff_tokens=8,
                                  light_dim_head=8, light_heads=2, light_window_size=8, heavy_dim_head=8,
                                  heavy_heads=2))


def byte_samples(n=8, seq_len=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, 256, (n, seq_len + 1), generator=g)
    return [{"input_ids": r[:-1].clone(), "targets": r[1:].clone()} for r in rows]


@pytest.mark.slow
def test_two_ddp_processes_give_the_loss_and_gradients_of_one_process_on_their_joined_batch(tmp_path):
    samples = byte_samples()
    torch.manual_seed(0)
    module = LanguageModelModule(seq_len=32, **TINY)
    initial = {k: v.clone() for k, v in module.state_dict().items()}
    record = str(tmp_path / "grads")
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(start_method="spawn"), max_steps=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[RecordFirstGradients(record)])
    trainer.fit(module, DataLoader(samples, batch_size=2))  # each process: 2 of the first 4 samples
    ranks = [torch.load(f"{record}.rank{r}", weights_only=False) for r in (0, 1)]

    seen = torch.cat([r["input_ids"] for r in ranks])
    joined = [s for s in samples if any(torch.equal(s["input_ids"], row) for row in seen)]
    assert len(joined) == 4  # the two processes trained on four different samples

    single = LanguageModelModule(seq_len=32, **TINY)
    single.load_state_dict(initial)
    single.train()
    loss, *_ = single._loss(default_collate(joined))
    loss.backward()

    assert sum(r["loss"] for r in ranks) / 2 == pytest.approx(float(loss), rel=1e-5)
    grads = {name: p.grad for name, p in single.named_parameters() if p.grad is not None}
    assert set(ranks[0]["grads"]) == set(grads)
    for name, grad in grads.items():
        torch.testing.assert_close(ranks[0]["grads"][name], grad, atol=1e-6, rtol=1e-4, msg=name)
        torch.testing.assert_close(ranks[1]["grads"][name], ranks[0]["grads"][name])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_two_node_torchrun_launch_on_localhost_trains_and_checkpoints_through_the_cli(tmp_path):
    fit = ["-m", "colt5_lightning.cli", "fit", *cfg("configs/model/lm/tiny.yaml"), *cfg("configs/data/passkey.yaml"),
           "--data.init_args.seq_len", "128", "--data.init_args.batch_size", "2", "--data.init_args.train_samples", "16",
           "--data.init_args.val_samples", "2", "--model.init_args.sample_length", "0", "--trainer.accelerator", "cpu",
           "--trainer.devices", "1", "--trainer.num_nodes", "2", "--trainer.strategy", "ddp",
           "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "1", "--trainer.max_steps", "3",
           "--trainer.default_root_dir", "runs"]
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLT5_CACHE_DIR": str(tmp_path / "cache")}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
                               *fit], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=(tmp_path / f"node{rank}.log").open("w"))
             for rank in (0, 1)]
    try:
        codes = [node.wait(timeout=240) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert codes == [0, 0], (tmp_path / "node0.log").read_text()[-3000:]
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["version_0"]  # one folder for the job, claimed by global rank 0
    ckpt = torch.load(tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=False)
    assert ckpt["global_step"] == 3
