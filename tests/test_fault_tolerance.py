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


def run_until_checkpoint(tmp_path, ckpt: Path, min_step: int):
    """Starts a real training process and returns it once last.ckpt holds step >= min_step."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLT5_CACHE_DIR": str(tmp_path / "cache")}
    # SIGINT back to its default in the child: a suite started in the background (`cmd &`) inherits
    # it ignored, and the child's Python would then never see the Ctrl+C the test sends
    proc = subprocess.Popen([*RUN, "--trainer.max_steps", "100000", "--checkpoint.dirpath", str(ckpt)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while step_so_far(ckpt / "last.ckpt") < min_step:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no checkpoint at step {min_step}: " + proc.stderr.read().decode()[-2000:])
        time.sleep(0.2)
    return proc, env


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 1)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signalled_run_saves_its_step_exits_non_zero_and_resumes(tmp_path, sig, code):
    ckpt = tmp_path / "ckpt"
    proc, env = run_until_checkpoint(tmp_path, ckpt, 10)
    periodic = saved_step(ckpt / "last.ckpt")
    proc.send_signal(sig)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the run ignored {sig.name} for 120 s: " + proc.communicate()[1].decode()[-2000:])
    assert proc.returncode == code, stderr.decode()[-2000:]
    step = saved_step(ckpt / "last.ckpt")
    assert step >= periodic  # saved when the signal was handled, not only at the last multiple of 5
    assert sorted(p.name for p in ckpt.iterdir()) == ["last.ckpt", "previous.ckpt"]  # no half-written file
    rerun = subprocess.run([*RUN, "--trainer.max_steps", str(step + 2), "--checkpoint.dirpath", str(ckpt),
                            "--ckpt_path", "last"], cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert saved_step(ckpt / "last.ckpt") == step + 2


def test_an_unwritable_checkpoint_folder_fails_before_the_first_step(tmp_path, monkeypatch):
    from colt5_lightning.cli import cli
    from colt5_lightning.training import CheckpointDirError, LanguageModelModule
    steps = []
    original = LanguageModelModule.training_step
    monkeypatch.setattr(LanguageModelModule, "training_step",
                        lambda self, *a, **k: steps.append(1) or original(self, *a, **k))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(CheckpointDirError, match="checkpoint.dirpath .*a_file/ckpt"):
        cli(RUN[3:] + ["--trainer.max_steps", "3", "--checkpoint.dirpath", str(blocker / "ckpt")])
    assert steps == []


def test_a_rerun_overwrites_last_ckpt_instead_of_writing_a_versioned_copy(tmp_path):
    from colt5_lightning.cli import cli
    ckpt = tmp_path / "ckpt"
    cli(RUN[3:] + ["--trainer.max_steps", "3", "--checkpoint.dirpath", str(ckpt)])
    cli(RUN[3:] + ["--trainer.max_steps", "4", "--checkpoint.dirpath", str(ckpt)])
    assert sorted(p.name for p in ckpt.iterdir()) == ["last.ckpt", "previous.ckpt"]  # no last-v1.ckpt
    assert saved_step(ckpt / "last.ckpt") == 4 and saved_step(ckpt / "previous.ckpt") == 3


def test_a_save_that_dies_mid_write_leaves_the_previous_checkpoint_whole(tmp_path):
    from colt5_lightning.cli import cli
    ckpt = tmp_path / "ckpt"
    result = cli(RUN[3:] + ["--trainer.max_steps", "3", "--checkpoint.dirpath", str(ckpt)])
    trainer = result.trainer
    callback = trainer.checkpoint_callback

    def dies_half_way(filepath, weights_only=False):
        with open(filepath, "wb") as f:
            f.write((ckpt / "last.ckpt").read_bytes()[:1000])
        raise OSError("disk full")

    trainer.save_checkpoint = dies_half_way
    with pytest.raises(OSError, match="disk full"):
        callback._save_checkpoint(trainer, str(ckpt / "last.ckpt"))
    assert saved_step(ckpt / "last.ckpt") == 3


def test_a_diverging_run_stops_at_once_naming_the_router_and_keeps_the_last_good_checkpoint(tmp_path):
    from colt5_lightning.cli import cli
    from colt5_lightning.training import NonFiniteError
    ckpt = tmp_path / "ckpt"
    diverge = ["--model.init_args.optim.lr", "1e4", "--model.init_args.optim.warmup_steps", "0",
               "--trainer.gradient_clip_val", "null", "--checkpoint.every_n_train_steps", "1"]
    with pytest.raises(NonFiniteError, match=r"router at training step \d+: .*NaN"):
        cli(RUN[3:] + ["--trainer.max_steps", "50", "--checkpoint.dirpath", str(ckpt)] + diverge)
    state = torch.load(ckpt / "last.ckpt", map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_a_nan_loss_is_an_error_naming_the_step(tmp_path, monkeypatch):
    from colt5_lightning.cli import cli
    from colt5_lightning.training import LanguageModelModule, NonFiniteError
    original = LanguageModelModule.training_step

    def nan_at_step_4(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.global_step == 4 else loss

    monkeypatch.setattr(LanguageModelModule, "training_step", nan_at_step_4)
    with pytest.raises(NonFiniteError, match="non-finite gradient at step 4|training loss is nan at step 4"):
        cli(RUN[3:] + ["--trainer.max_steps", "20", "--checkpoint.dirpath", str(tmp_path / "ckpt")])


@pytest.mark.slow
def test_losses_after_a_kill_and_resume_equal_an_uninterrupted_run_step_for_step(tmp_path):
    """Router score noise (random) is on and the data order is shuffled: a resume that replayed
    the first batches, or drew fresh noise, would give different losses."""
    import json
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLT5_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(REPO / "tests")}
    noisy = ["--model.init_args.routing.router_kwargs", "{score_noise: 1.0}", "--checkpoint.every_n_train_steps", "3",
             "--trainer.callbacks+=helpers.record_groups.RecordOptimizerGroups"]
    steps = 60  # the killed run is stopped after step 6, but may have run on a few steps by then

    def losses(name, extra):
        subprocess.run([*RUN, *noisy, "--trainer.callbacks.path", str(tmp_path / name), *extra],
                       cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
        return dict((step, loss) for step, loss in json.loads((tmp_path / f"{name}.rank0").read_text())["losses"])

    straight = losses("straight", ["--trainer.max_steps", str(steps), "--checkpoint.dirpath", str(tmp_path / "a")])
    ckpt = tmp_path / "b"
    proc = subprocess.Popen([*RUN, *noisy, "--trainer.callbacks.path", str(tmp_path / "killed"),
                             "--trainer.max_steps", "100000", "--checkpoint.dirpath", str(ckpt)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while step_so_far(ckpt / "last.ckpt") < 6:
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint at step 6"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = saved_step(ckpt / "last.ckpt")
    assert 6 <= saved < steps
    resumed = losses("resumed", ["--trainer.max_steps", str(steps), "--checkpoint.dirpath", str(ckpt),
                                 "--ckpt_path", "last"])
    assert sorted(resumed) == list(range(saved, steps))
    assert [resumed[s] for s in range(saved, steps)] == pytest.approx([straight[s] for s in range(saved, steps)],
                                                                       rel=1e-6, abs=1e-7)


@pytest.mark.slow
def test_a_ddp_run_resumed_mid_epoch_trains_each_process_exactly_as_an_uninterrupted_one(tmp_path):
    """Two gloo processes, score noise on, the data shuffled: stopped at step 5 of a 16-step epoch
    and resumed, each process's losses equal the uninterrupted run's. A resumed epoch that started
    over, or shards that moved, would replay other samples."""
    import json
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLT5_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(REPO / "tests")}
    ddp = ["--config", str(REPO / "configs/trainer/ddp_cpu.yaml"), "--data.init_args.train_samples", "64",
           "--model.init_args.routing.router_kwargs", "{score_noise: 1.0}", "--model.init_args.optim.max_steps", "10",
           "--trainer.callbacks+=helpers.record_groups.RecordOptimizerGroups"]

    def losses(name, extra):
        subprocess.run([*RUN, *ddp, "--trainer.callbacks.path", str(tmp_path / name), *extra],
                       cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
        return [dict((step, loss) for step, loss in json.loads((tmp_path / f"{name}.rank{r}").read_text())["losses"])
                for r in (0, 1)]

    straight = losses("straight", ["--trainer.max_steps", "10", "--checkpoint.dirpath", str(tmp_path / "a")])
    losses("first", ["--trainer.max_steps", "5", "--checkpoint.dirpath", str(tmp_path / "b")])
    assert saved_step(tmp_path / "b" / "last.ckpt") == 5
    resumed = losses("resumed", ["--trainer.max_steps", "10", "--checkpoint.dirpath", str(tmp_path / "b"),
                                 "--ckpt_path", "last"])
    for rank in (0, 1):
        assert sorted(resumed[rank]) == list(range(5, 10))
        assert [resumed[rank][s] for s in range(5, 10)] == pytest.approx([straight[rank][s] for s in range(5, 10)],
                                                                          rel=1e-6, abs=1e-7)
    assert straight[0][7] != straight[1][7]  # the two processes trained on different samples


def test_a_resume_from_the_end_of_an_epoch_trains_the_next_epoch_in_full(tmp_path):
    """8 batches an epoch, a checkpoint every 8 steps: the run is stopped at an epoch boundary."""
    import json
    import sys as _sys
    from colt5_lightning.cli import cli
    _sys.path.insert(0, str(REPO / "tests"))
    small = ["--data.init_args.train_samples", "16", "--checkpoint.every_n_train_steps", "8",
             "--model.init_args.routing.router_kwargs", "{score_noise: 1.0}",
             "--trainer.callbacks+=helpers.record_groups.RecordOptimizerGroups"]

    def losses(name, extra):
        cli(RUN[3:] + small + ["--trainer.callbacks.path", str(tmp_path / name)] + extra)
        return dict((s, v) for s, v in json.loads((tmp_path / f"{name}.rank0").read_text())["losses"])

    straight = losses("straight", ["--trainer.max_steps", "12", "--checkpoint.dirpath", str(tmp_path / "a")])
    losses("first", ["--trainer.max_steps", "8", "--checkpoint.dirpath", str(tmp_path / "b")])
    resumed = losses("resumed", ["--trainer.max_steps", "12", "--checkpoint.dirpath", str(tmp_path / "b"),
                                 "--ckpt_path", "last"])
    assert sorted(resumed) == [8, 9, 10, 11]
    assert [resumed[s] for s in range(8, 12)] == pytest.approx([straight[s] for s in range(8, 12)], rel=1e-6)


def test_the_guard_leaves_inf_gradients_to_a_grad_scaler():
    """Under 16-mixed, GradScaler skips steps with inf gradients itself and lowers its scale."""
    from types import SimpleNamespace
    from colt5_lightning.training import NonFiniteError, NonFiniteGuard
    layer = torch.nn.Linear(2, 2)
    layer.weight.grad = torch.full((2, 2), float("inf"))
    strategy = SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision)
    scaled = SimpleNamespace(global_step=3, precision_plugin=SimpleNamespace(scaler=object()), strategy=strategy)
    NonFiniteGuard().on_before_optimizer_step(scaled, layer, None)
    plain = SimpleNamespace(global_step=3, precision_plugin=SimpleNamespace(), strategy=strategy)
    with pytest.raises(NonFiniteError, match="weight"):
        NonFiniteGuard().on_before_optimizer_step(plain, layer, None)


@pytest.mark.parametrize("damage", ["truncated", "empty"])
@pytest.mark.parametrize("ckpt_path", ["last", "explicit"])
def test_resuming_from_a_damaged_checkpoint_is_one_clear_error(tmp_path, capsys, damage, ckpt_path):
    from colt5_lightning.cli import cli
    ckpt = tmp_path / "ckpt"
    cli(RUN[3:] + ["--trainer.max_steps", "2", "--checkpoint.dirpath", str(ckpt)])
    last = ckpt / "last.ckpt"
    last.write_bytes(last.read_bytes()[:3000] if damage == "truncated" else b"")
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli(RUN[3:] + ["--trainer.max_steps", "4", "--checkpoint.dirpath", str(ckpt),
                       "--ckpt_path", "last" if ckpt_path == "last" else str(last)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    # (the last two lines: pytest's capture can make Lightning's log handler report a closed stream above)
    assert err.strip().splitlines()[-2].startswith(f"colt5: error: cannot resume from {last}: the file is damaged")


def test_a_damaged_last_checkpoint_resumes_from_the_one_it_replaced(tmp_path, capsys, monkeypatch):
    from colt5_lightning.cli import cli
    from colt5_lightning.training import LanguageModelModule
    ckpt = tmp_path / "ckpt"
    cli(RUN[3:] + ["--trainer.max_steps", "7", "--checkpoint.dirpath", str(ckpt)])  # saves at 5, then 7
    assert saved_step(ckpt / "previous.ckpt") == 5
    last = ckpt / "last.ckpt"
    last.write_bytes(last.read_bytes()[:3000])  # truncated, e.g. by a copy that ran out of disk
    capsys.readouterr()
    steps = []
    original = LanguageModelModule.training_step
    monkeypatch.setattr(LanguageModelModule, "training_step",
                        lambda self, *a, **k: steps.append(self.global_step) or original(self, *a, **k))
    cli(RUN[3:] + ["--trainer.max_steps", "9", "--checkpoint.dirpath", str(ckpt), "--ckpt_path", "last"])
    assert f"colt5: {last} cannot be read (RuntimeError); resuming from {ckpt / 'previous.ckpt'}" in capsys.readouterr().err
    assert steps == [5, 6, 7, 8]
    assert saved_step(last) == 9


def test_a_damaged_checkpoint_named_on_the_command_line_is_an_error_that_names_the_previous_one(tmp_path, capsys):
    from colt5_lightning.cli import cli
    ckpt = tmp_path / "ckpt"
    cli(RUN[3:] + ["--trainer.max_steps", "7", "--checkpoint.dirpath", str(ckpt)])
    last = ckpt / "last.ckpt"
    last.write_bytes(b"")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli(RUN[3:] + ["--trainer.max_steps", "9", "--checkpoint.dirpath", str(ckpt), "--ckpt_path", str(last)])
    assert f"pass e.g. {ckpt / 'previous.ckpt'}, the checkpoint it replaced, with --ckpt_path" in capsys.readouterr().err


@pytest.mark.parametrize("ckpt_path", ["last", "explicit"])
@pytest.mark.parametrize("setting, value", [("routing.router_type", "sinkhorn"), ("routing.light_window_size", "32"),
                                            ("dense", "true")])
def test_a_resume_that_would_build_another_model_is_refused_before_training(tmp_path, capsys, setting, value,
                                                                             ckpt_path):
    from colt5_lightning.cli import cli
    ckpt = tmp_path / "ckpt"
    cli(RUN[3:] + ["--trainer.max_steps", "2", "--checkpoint.dirpath", str(ckpt)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli(RUN[3:] + ["--trainer.max_steps", "4", "--checkpoint.dirpath", str(ckpt), f"--model.init_args.{setting}", value,
                       "--ckpt_path", "last" if ckpt_path == "last" else str(ckpt / "last.ckpt")])
    assert info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-2]
    assert error.startswith(f"colt5: error: {ckpt / 'last.ckpt'} was trained as another model")
    assert f"{setting}: " in error
    assert saved_step(ckpt / "last.ckpt") == 2  # nothing trained, nothing saved over it


@pytest.mark.parametrize("ckpt_path", ["last", "explicit"])
def test_a_resume_may_change_the_learning_rate_and_says_so(tmp_path, capsys, ckpt_path):
    from colt5_lightning.cli import cli
    ckpt = tmp_path / "ckpt"
    cli(RUN[3:] + ["--trainer.max_steps", "2", "--checkpoint.dirpath", str(ckpt), "--model.init_args.optim.lr", "1e-3"])
    capsys.readouterr()
    resumed = cli(RUN[3:] + ["--trainer.max_steps", "3", "--checkpoint.dirpath", str(ckpt),
                             "--model.init_args.optim.lr", "5e-4",
                             "--ckpt_path", "last" if ckpt_path == "last" else str(ckpt / "last.ckpt")])
    assert resumed.model.optim.lr == 5e-4  # the command line's, not the checkpoint's
    assert resumed.trainer.global_step == 3
    assert "colt5: changed from the checkpoint: optim.lr: 0.001 in the checkpoint, 0.0005 now" in capsys.readouterr().err


def test_a_checkpoint_of_another_module_class_is_refused(tmp_path, capsys):
    from colt5_lightning.cli import cli
    ckpt = tmp_path / "ckpt"
    cli(RUN[3:] + ["--trainer.max_steps", "1", "--checkpoint.dirpath", str(ckpt)])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli(["fit", "--config", str(REPO / "configs/model/sequence/tiny.yaml"), "--config", str(REPO / "configs/data/listops.yaml"),
             "--trainer.accelerator", "cpu", "--trainer.max_steps", "2", "--trainer.logger", "false",
             "--checkpoint.dirpath", str(tmp_path / "other"), "--ckpt_path", str(ckpt / "last.ckpt")])
    assert "holds a LanguageModelModule, but this run builds a SequenceClassificationModule" in capsys.readouterr().err


def _children(pid: int) -> list:
    """(pid, command line) of the processes whose parent is pid."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                found.append((int(entry), Path(f"/proc/{entry}/cmdline").read_text().replace("\0", " ")))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_a_hung_process_ends_a_ddp_job_within_the_timeout_with_one_clear_line(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLT5_CACHE_DIR": str(tmp_path / "cache")}
    ckpt = tmp_path / "ckpt"
    command = [*RUN, "--config", str(REPO / "configs/trainer/ddp_cpu.yaml"), "--trainer.strategy.init_args.timeout",
               "0:00:10", "--trainer.max_steps", "100000", "--checkpoint.dirpath", str(ckpt)]
    log = tmp_path / "stderr.log"  # a file, not a pipe: a full pipe would block the job's writes
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"),
                            start_new_session=True)
    workers = []
    try:
        deadline = time.time() + 180
        while step_so_far(ckpt / "last.ckpt") < 0 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, log.read_text()[-2000:]
        workers = [pid for pid, cmd in _children(proc.pid) if "spawn_main" in cmd]
        assert len(workers) == 2, _children(proc.pid)
        os.kill(workers[1], signal.SIGSTOP)  # rank 1 hangs: alive, holding its sockets, answering nothing
        stopped = time.time()
        returncode = proc.wait(timeout=150)
        waited = time.time() - stopped
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
    err = log.read_text()
    assert returncode == 1, err[-2000:]
    assert waited < 10 + 90  # the timeout plus start-up of the error path, not the default 30 minutes
    last = err.strip().splitlines()[-1]
    assert last.startswith("colt5: error: another process of this distributed job died or stopped answering"), last
