"""`colt5 plot` and `colt5 plot-routing`: PNGs from a real run's logs and checkpoint."""
from __future__ import annotations

import csv

import lightning as L
import pytest
import torch

from colt5_lightning.cli import main
from colt5_lightning.data import PasskeyReadoutDataModule
from colt5_lightning.models import RoutingConfig
from colt5_lightning.reporting import passkey_example, read_metrics, routing_by_position
from colt5_lightning.training import SequenceClassificationModule

pytest.importorskip("matplotlib")

ROUTING = RoutingConfig(num_heavy_attn_tokens_q=8, num_heavy_attn_tokens_kv=8, num_heavy_ff_tokens=8,
                        light_dim_head=8, light_heads=2, light_window_size=8, heavy_dim_head=8, heavy_heads=2)
TINY = dict(dim=16, depth=1, routing=ROUTING)
PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A real 4-step passkey-readout run with a CSV log and a checkpoint."""
    root = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    data = PasskeyReadoutDataModule(seq_len=128, batch_size=2, val_samples=2)
    module = SequenceClassificationModule(256, 10, max_seq_len=128, num_readout=5, optim=dict(warmup_steps=1), **TINY)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", default_root_dir=root, log_every_n_steps=1,
                        logger=L.pytorch.loggers.CSVLogger(root, name="csv"), enable_progress_bar=False,
                        enable_model_summary=False, val_check_interval=2, limit_val_batches=1)
    trainer.fit(module, datamodule=data)
    ckpt = root / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    return root, ckpt


def test_read_metrics_finds_the_csv_under_a_run_folder(trained_run):
    root, _ = trained_run
    metrics = read_metrics(str(root))
    assert [step for step, _ in metrics["train/loss"]] == [0, 1, 2, 3]
    assert "val/exact_acc" in metrics


def test_plot_writes_one_png_comparing_runs(trained_run, tmp_path):
    root, _ = trained_run
    out = tmp_path / "curves.png"
    main(["plot", str(root), str(root), "--labels", "a,b", "--out", str(out)])
    assert out.read_bytes()[:4] == PNG


def test_plot_of_a_folder_without_logs_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert "metrics.csv" in capsys.readouterr().err


def test_plot_routing_draws_every_router_from_a_checkpoint(trained_run, tmp_path):
    _, ckpt = trained_run
    out = tmp_path / "routing.png"
    main(["plot-routing", "--ckpt_path", str(ckpt), "--out", str(out)])
    assert out.read_bytes()[:4] == PNG


def test_routing_by_position_gives_each_router_its_weights():
    model = SequenceClassificationModule(256, 10, max_seq_len=128, num_readout=5, **TINY).model
    ids, (start, end) = passkey_example(128, readout=True)
    weights = routing_by_position(model, ids)
    assert sorted(weights) == ["router/layer0/ff", "router/layer0/kv", "router/layer0/q"]
    assert all(w.shape == (128,) and 0 < (w > 0).sum() <= 8 for w in weights.values())
    assert bytes(ids[0, start:end].tolist()).decode().startswith("The pass key is ")
