"""A real training process killed mid-run leaves a checkpoint that a rerun resumes from."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RUN = [sys.executable, "-m", "colt5_lightning.cli", "fit",
       "--config", str(REPO / "configs/model/lm/tiny.yaml"), "--config", str(REPO / "configs/data/passkey.yaml"),
       "--data.init_args.seq_len", "128", "--data.init_args.batch_size", "2", "--data.init_args.val_samples", "2",
       "--model.init_args.sample_length", "0", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
       "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
       "--trainer.limit_val_batches", "1", "--trainer.logger", "false", "--checkpoint.every_n_train_steps", "5"]


def saved_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def step_so_far(path: Path) -> int:
    """The saved step, or -1 while there is no complete checkpoint yet (it may be mid-write)."""
    try:
        return saved_step(path)
    except (FileNotFoundError, EOFError, RuntimeError):
        return -1


@pytest.mark.slow
def test_sigkill_mid_run_leaves_a_checkpoint_the_rerun_continues_from(tmp_path):
    ckpt = tmp_path / "ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLT5_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([*RUN, "--trainer.max_steps", "100000", "--checkpoint.dirpath", str(ckpt)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while step_so_far(ckpt / "last.ckpt") < 10:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint at step 10 within 2 minutes"
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    step = saved_step(ckpt / "last.ckpt")
    assert step % 5 == 0 and step >= 10
    rerun = subprocess.run([*RUN, "--trainer.max_steps", str(step + 3), "--checkpoint.dirpath", str(ckpt),
                            "--ckpt_path", "last"], cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert saved_step(ckpt / "last.ckpt") == step + 3


def test_last_checkpoint_holds_the_final_step_when_it_is_not_a_multiple_of_the_save_interval(tmp_path):
    from colt5_lightning.cli import cli
    ckpt = tmp_path / "ckpt"
    result = cli([a for a in RUN[3:]] + ["--trainer.max_steps", "7", "--checkpoint.dirpath", str(ckpt)])
    assert result.trainer.global_step == 7
    assert saved_step(ckpt / "last.ckpt") == 7
