"""Every run has its own folder under trainer.default_root_dir; `last` means the newest checkpoint."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from colt5_lightning.cli import cli, main
from colt5_lightning.training.run_dirs import claim_run_dir, find_checkpoint, newest_run_with_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY_LM = [
    "--config", str(REPO / "configs/model/lm/tiny.yaml"), "--config", str(REPO / "configs/data/passkey.yaml"),
    "--data.init_args.seq_len", "128", "--data.init_args.batch_size", "2", "--data.init_args.train_samples", "16",
    "--data.init_args.val_samples", "2", "--model.init_args.sample_length", "0",
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_model_summary", "false",
    "--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "0",
    "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1",
]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def saved_step(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def fake_run(root: Path, number: int, step=None) -> Path:
    run = root / f"version_{number}"
    (run / "checkpoints").mkdir(parents=True)
    if step is not None:
        torch.save({"global_step": step}, run / "checkpoints" / "last.ckpt")
    return run


def test_runs_are_numbered_in_order_from_the_highest_existing(tmp_path):
    (tmp_path / "version_7").mkdir()
    (tmp_path / "version_x").mkdir()
    assert claim_run_dir(tmp_path).name == "version_8"
    assert claim_run_dir(tmp_path).name == "version_9"
    assert claim_run_dir(tmp_path / "new").name == "version_0"


def test_the_newest_run_with_a_checkpoint_is_found_past_newer_runs_without_one(tmp_path):
    fake_run(tmp_path, 0, step=5)
    fake_run(tmp_path, 1, step=9)
    fake_run(tmp_path, 2)  # a run that never saved (a validate, or one still starting)
    assert newest_run_with_checkpoint(tmp_path) == tmp_path / "version_1"
    assert find_checkpoint(tmp_path) == tmp_path / "version_1" / "checkpoints" / "last.ckpt"
    assert find_checkpoint(tmp_path / "version_0") == tmp_path / "version_0" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("where", ["missing", "empty folder"])
def test_a_path_without_a_checkpoint_is_named(tmp_path, where):
    path = tmp_path / "nothing"
    if where == "empty folder":
        path.mkdir()
    with pytest.raises(FileNotFoundError, match="nothing"):
        find_checkpoint(path)


def test_default_root_dir_holds_the_logs_config_and_checkpoints_of_the_run(tmp_path):
    result = cli(["fit", *TINY_LM, "--trainer.max_steps", "2", "--trainer.default_root_dir", "elsewhere/runs"])
    run = tmp_path / "elsewhere" / "runs" / "version_0"
    assert Path(result.trainer.checkpoint_callback.last_model_path) == run / "checkpoints" / "last.ckpt"
    assert saved_step(run / "checkpoints" / "last.ckpt") == 2
    assert list(run.glob("events.out.tfevents*")) and (run / "metrics.csv").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["default_root_dir"] == "elsewhere/runs"
    assert not (tmp_path / "logs").exists()


def test_each_run_gets_a_new_folder_and_last_resumes_from_the_newest(tmp_path):
    root = ["--trainer.default_root_dir", "runs"]
    cli(["fit", *TINY_LM, *root, "--trainer.max_steps", "2"])
    cli(["fit", *TINY_LM, *root, "--trainer.max_steps", "3"])
    resumed = cli(["fit", *TINY_LM, *root, "--trainer.max_steps", "5", "--ckpt_path", "last"])
    runs = tmp_path / "runs"
    assert resumed.trainer.global_step == 5
    assert saved_step(runs / "version_2" / "checkpoints" / "last.ckpt") == 5  # resumed from version_1's step 3
    assert saved_step(runs / "version_0" / "checkpoints" / "last.ckpt") == 2  # earlier runs are left alone
    assert saved_step(runs / "version_1" / "checkpoints" / "last.ckpt") == 3


def test_sample_takes_a_recipe_log_folder_and_reads_its_newest_run(tmp_path, capsys):
    cli(["fit", *TINY_LM, "--trainer.default_root_dir", "runs", "--trainer.max_steps", "1"])
    capsys.readouterr()
    main(["sample", "--ckpt_path", "runs", "--length", "4", "--prompt", "ab"])
    assert capsys.readouterr().out.startswith("ab")


def test_validate_takes_a_folder_for_its_newest_checkpoint(tmp_path):
    cli(["fit", *TINY_LM, "--trainer.default_root_dir", "runs", "--trainer.max_steps", "2"])
    result = cli(["validate", *TINY_LM, "--trainer.default_root_dir", "runs", "--ckpt_path", "runs"])
    assert result.config.validate.ckpt_path == str(Path("runs") / "version_0" / "checkpoints" / "last.ckpt")
    assert result.trainer.callback_metrics["val/loss"] > 0


def test_an_unwritable_root_is_one_error_line_before_training(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        cli(["fit", *TINY_LM, "--trainer.default_root_dir", "a_file/runs", "--trainer.max_steps", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "trainer.default_root_dir 'a_file/runs' cannot be created" in err


@pytest.mark.slow
def test_two_runs_started_together_write_to_two_folders(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "colt5_lightning.cli", "fit", *TINY_LM, "--trainer.max_steps", "2",
               "--trainer.default_root_dir", "runs"]
    procs = [subprocess.Popen(command + ["--seed_everything", str(seed)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for seed in (1, 2)]
    for proc in procs:
        assert proc.wait(timeout=240) == 0, proc.stderr.read().decode()[-2000:]
    runs = sorted((tmp_path / "runs").iterdir())
    assert [run.name for run in runs] == ["version_0", "version_1"]
    seeds = {yaml.safe_load((run / "config.yaml").read_text())["seed_everything"] for run in runs}
    assert seeds == {1, 2}  # each run's config is its own, none overwritten
    assert all(saved_step(run / "checkpoints" / "last.ckpt") == 2 for run in runs)


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "RANK", "SLURM_PROCID", "PMI_RANK", "OMPI_COMM_WORLD_RANK"])
def test_processes_of_other_ranks_do_not_claim_a_run_folder(variable, monkeypatch):
    from colt5_lightning.training.run_dirs import RANK_VARIABLES, is_worker_process
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not is_worker_process()
    monkeypatch.setenv(variable, "0")
    assert not is_worker_process()
    monkeypatch.setenv(variable, "3")
    assert is_worker_process()
