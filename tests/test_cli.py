"""The `colt5` command end to end, in-process and on tiny sizes: every recipe trains for a batch,
DDP on two CPU processes, resuming, the saved config, omegaconf interpolation, the data->model
links, the router metrics, `colt5 sample`, and errors that name the bad value."""
from __future__ import annotations

import csv
import faulthandler
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from colt5_lightning.cli import cli, main, sample
from colt5_lightning.data.byte_codec import decode
from colt5_lightning.models import CoLT5LanguageModel

REPO = Path(__file__).resolve().parents[1]


def cfg(name: str) -> list:
    return ["--config", str(REPO / name)]


CPU_RUN = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_model_summary", "false"]
# A byte LM on passkey samples: no corpus to read, 8 batches of 2 x 128 bytes per epoch.
TINY_LM = [
    *cfg("configs/model/lm/tiny.yaml"), *cfg("configs/data/passkey.yaml"),
    "--data.init_args.seq_len", "128", "--data.init_args.batch_size", "2",
    "--data.init_args.train_samples", "16", "--data.init_args.val_samples", "2",
    "--model.init_args.sample_length", "0", *CPU_RUN,
    "--trainer.num_sanity_val_steps", "0", "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1",
]
# ListOps padded to 128 tokens (expressions of 64-128), window 16 divides it.
TINY_LISTOPS = [
    *cfg("configs/model/sequence/tiny.yaml"), *cfg("configs/data/listops.yaml"),
    "--data.init_args.min_length", "64", "--data.init_args.max_length", "128", "--data.init_args.batch_size", "4",
    "--data.init_args.train_samples", "16", "--data.init_args.val_samples", "4", *CPU_RUN,
    "--trainer.num_sanity_val_steps", "0", "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1",
]
BYTES = ["--data.init_args.seq_len", "256", "--data.init_args.max_bytes", "200000", "--data.init_args.batch_size", "2",
         "--data.init_args.val_windows", "2", "--model.init_args.sample_length", "8"]


@pytest.fixture(scope="session")
def _cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("colt5_cache")  # the stdlib byte corpus is built once per session


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch, _cache_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLT5_CACHE_DIR", str(_cache_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for spawned DDP workers
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


RECIPES = {
    "recipes/language_modeling/cpu.yaml": (
        [*cfg("recipes/language_modeling/cpu.yaml"), *cfg("configs/model/lm/tiny.yaml"), *BYTES]),
    "recipes/language_modeling/gpu_8k.yaml": (
        [*cfg("recipes/language_modeling/gpu_8k.yaml"), *cfg("configs/trainer/cpu.yaml"),
         *cfg("configs/model/lm/tiny.yaml"), *BYTES]),
    "recipes/language_modeling/gpu_16k.yaml": (
        [*cfg("recipes/language_modeling/gpu_16k.yaml"), *cfg("configs/trainer/cpu.yaml"),
         *cfg("configs/model/lm/tiny.yaml"), *BYTES]),
    "recipes/long_range/passkey.yaml": (
        [*cfg("recipes/long_range/passkey.yaml"), *cfg("configs/model/lm/tiny.yaml"),
         "--data.init_args.seq_len", "256", "--data.init_args.batch_size", "2", "--data.init_args.val_samples", "2"]),
    "recipes/long_range/passkey_encoder.yaml": (
        [*cfg("recipes/long_range/passkey_encoder.yaml"), *cfg("configs/model/sequence/tiny.yaml"),
         "--data.init_args.seq_len", "256", "--data.init_args.start_len", "128", "--data.init_args.val_samples", "2"]),
    "recipes/long_range/passkey_decoder.yaml": (
        [*cfg("recipes/long_range/passkey_decoder.yaml"), *cfg("configs/model/lm/tiny.yaml"),
         "--data.init_args.seq_len", "256", "--data.init_args.start_len", "128", "--data.init_args.val_samples", "2"]),
    "recipes/long_range/listops.yaml": (
        [*cfg("recipes/long_range/listops.yaml"), *cfg("configs/model/sequence/tiny.yaml"),
         "--data.init_args.min_length", "64", "--data.init_args.max_length", "128",
         "--data.init_args.batch_size", "4", "--data.init_args.train_samples", "16"]),
    "recipes/image_feature_map/pathfinder.yaml": (
        [*cfg("recipes/image_feature_map/pathfinder.yaml"), *cfg("configs/model/image/tiny.yaml"),
         "--data.init_args.image_size", "32", "--data.init_args.batch_size", "4",
         "--data.init_args.train_samples", "16", "--data.init_args.val_samples", "4"]),
    "recipes/image_feature_map/matching_marks.yaml": (
        [*cfg("recipes/image_feature_map/matching_marks.yaml"), "--model.init_args.dim", "16",
         "--data.init_args.image_size", "8", "--data.init_args.min_distance", "4",
         "--data.init_args.batch_size", "4", "--data.init_args.val_samples", "4"]),
    "recipes/image_feature_map/mark_colour.yaml": (
        [*cfg("recipes/image_feature_map/mark_colour.yaml"), "--model.init_args.dim", "16",
         "--data.init_args.image_size", "8", "--data.init_args.min_distance", "4",
         "--data.init_args.batch_size", "4", "--data.init_args.val_samples", "4"]),
    "recipes/image_feature_map/diffusion_pathfinder.yaml": (
        [*cfg("recipes/image_feature_map/diffusion_pathfinder.yaml"), "--model.init_args.dim", "16",
         "--model.init_args.depth", "1", "--model.init_args.sample_steps", "2", "--model.init_args.num_samples", "2",
         "--data.init_args.batch_size", "4", "--data.init_args.train_samples", "16", "--data.init_args.val_samples", "4"]),
    "recipes/image_feature_map/vit_pathfinder.yaml": (
        [*cfg("recipes/image_feature_map/vit_pathfinder.yaml"), "--trainer.accelerator", "cpu",
         "--model.init_args.model.init_args.dim", "32", "--model.init_args.model.init_args.depth", "1",
         "--data.init_args.image_size", "32", "--data.init_args.batch_size", "4",
         "--data.init_args.train_samples", "16", "--data.init_args.val_samples", "4"]),
}


def test_recipes_are_all_covered():
    assert sorted(RECIPES) == sorted(p.relative_to(REPO).as_posix() for p in (REPO / "recipes").rglob("*.yaml"))


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_fast_dev_run(recipe):
    assert main(["fit", *RECIPES[recipe], "--trainer.accelerator", "cpu", "--trainer.fast_dev_run", "true"]) is None


@pytest.mark.slow
def test_ddp_cpu_two_processes_trains_and_checkpoints(tmp_path):
    ckpt_dir = tmp_path / "ckpt"
    # a worker that dies before the gloo rendezvous leaves the other one waiting for 30 minutes:
    # end the test run with tracebacks instead
    faulthandler.dump_traceback_later(300, exit=True)
    try:
        main(["fit", *TINY_LM, *cfg("configs/trainer/ddp_cpu.yaml"), "--trainer.max_steps", "2",
              "--checkpoint.dirpath", str(ckpt_dir)])
    finally:
        faulthandler.cancel_dump_traceback_later()
    ckpt = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2


def _logged_steps(trainer, key: str) -> set:
    csv_logger = next(lg for lg in trainer.loggers if type(lg).__name__ == "CSVLogger")
    with open(Path(csv_logger.log_dir) / "metrics.csv") as f:
        return {int(row["step"]) for row in csv.DictReader(f) if row.get(key)}


def test_resume_from_last_checkpoint(tmp_path):
    ckpt_dir = str(tmp_path / "ckpt")
    first = cli(["fit", *TINY_LM, "--trainer.max_steps", "2", "--checkpoint.dirpath", ckpt_dir])
    assert first.trainer.global_step == 2
    second = cli(["fit", *TINY_LM, "--trainer.max_steps", "4", "--checkpoint.dirpath", ckpt_dir, "--ckpt_path", "last"])
    assert second.trainer.global_step == 4
    assert _logged_steps(second.trainer, "train/loss") == {2, 3}  # steps 0 and 1 were not run again
    assert torch.load(Path(ckpt_dir) / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 4


def test_resolved_config_saved_next_to_tensorboard_logs():
    result = cli(["fit", *TINY_LM, "--trainer.max_steps", "1"])
    tb = next(lg for lg in result.trainer.loggers if type(lg).__name__ == "TensorBoardLogger")
    log_dir = Path(tb.log_dir)
    assert list(log_dir.glob("events.out.tfevents*")), f"no TensorBoard events in {log_dir}"
    saved = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert saved["model"]["class_path"] == "colt5_lightning.training.LanguageModelModule"
    assert saved["model"]["init_args"]["seq_len"] == 128  # the value linked from the data
    assert saved["trainer"]["max_steps"] == 1


def test_omegaconf_interpolation_in_user_yaml(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("model:\n  init_args:\n    routing:\n      num_heavy_attn_tokens_q: 8\n"
                    "      num_heavy_ff_tokens: ${model.init_args.routing.num_heavy_attn_tokens_q}\n")
    result = cli([*TINY_LM, "--config", str(user)], run=False)
    assert result.model.routing.num_heavy_ff_tokens == 8


def test_a_stacked_config_changes_only_the_routing_fields_it_names():
    result = cli([*cfg("recipes/language_modeling/cpu.yaml"), *cfg("configs/model/light_only.yaml"),
                  "--model.init_args.routing.router_type", "sinkhorn", "--trainer.logger", "false"], run=False)
    routing = result.model.routing
    assert routing.heavy is False and routing.router_type == "sinkhorn"  # the later config, the command line
    assert routing.light_window_size == 64 and routing.num_heavy_attn_tokens_q == 128  # the recipe's own


def test_lm_sizes_come_from_the_data():
    result = cli([*TINY_LM, "--model.init_args.vocab_size", "100", "--model.init_args.seq_len", "64"], run=False)
    data, model = result.datamodule, result.model
    assert model.hparams.vocab_size == data.vocab_size == 256
    assert model.hparams.seq_len == data.seq_len == 128
    assert model.model.max_seq_len == 128


def test_image_size_comes_from_the_data():
    result = cli([*cfg("configs/model/image/tiny.yaml"), *cfg("configs/data/pathfinder.yaml"), *CPU_RUN,
                  "--data.init_args.image_size", "64", "--model.init_args.image_size", "32"], run=False)
    assert result.model.hparams.image_size == result.datamodule.image_size == 64
    assert result.model.model.image_size == 64


def test_image_readout_comes_from_the_data():
    recipe = [*cfg("recipes/image_feature_map/mark_colour.yaml"), "--model.init_args.readout", "mean"]
    assert cli(recipe, run=False).model.model.readout == "corner"
    marks = cfg("recipes/image_feature_map/matching_marks.yaml")  # its data says nothing: the model's default
    assert cli(marks, run=False).model.model.readout == "mean"


def test_a_readout_the_model_cannot_take_is_one_error_naming_it(capsys):
    with pytest.raises(SystemExit):
        cli([*cfg("recipes/image_feature_map/vit_pathfinder.yaml"), "--trainer.accelerator", "cpu",
             "--data", "colt5_lightning.data.MarkColourDataModule"], run=False)
    err = capsys.readouterr().err
    assert "readout='corner'" in err and "ClassificationModule does not take" in err


def test_sequence_sizes_come_from_the_data():
    # SequenceClassificationModule has no defaults for vocab_size and num_classes: only the data gives them
    result = cli(TINY_LISTOPS, run=False)
    hp, data = result.model.hparams, result.datamodule
    assert (hp.vocab_size, hp.num_classes, hp.max_seq_len) == (data.vocab_size, data.num_classes, 128)


def _router_metrics(trainer) -> dict:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("router/")}


def test_router_metrics_logged_and_finite():
    result = cli(["fit", *TINY_LM, "--trainer.max_steps", "2"])
    metrics = _router_metrics(result.trainer)
    for kind in ("q", "kv", "ff"):
        assert f"router/layer0/{kind}/frac_routed" in metrics
    assert "router/layer0/q/kv_overlap" in metrics
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert set(_router_metrics(result.trainer)) <= set(result.trainer.logged_metrics)


def test_router_never_routes_padding():
    result = cli(["fit", *TINY_LISTOPS, "--trainer.max_steps", "2"])
    batch = next(iter(result.datamodule.train_dataloader()))
    assert not batch["mask"].all(), "the ListOps batches must hold padding for this test to mean anything"
    pad = {k: v for k, v in _router_metrics(result.trainer).items() if k.endswith("/pad_frac")}
    assert {"router/layer0/q/pad_frac", "router/layer0/kv/pad_frac", "router/layer0/ff/pad_frac"} <= set(pad)
    assert all(v == 0.0 for v in pad.values()), pad


@pytest.fixture
def lm_checkpoint(tmp_path) -> Path:
    ckpt_dir = tmp_path / "ckpt"
    cli(["fit", *TINY_LM, "--trainer.max_steps", "1", "--checkpoint.dirpath", str(ckpt_dir)])
    return ckpt_dir / "last.ckpt"


def test_sample_generates_length_new_bytes(lm_checkpoint, monkeypatch, capsys):
    outputs = []
    generate = CoLT5LanguageModel.generate

    def spy(self, *args, **kwargs):
        outputs.append(generate(self, *args, **kwargs))
        return outputs[-1]

    monkeypatch.setattr(CoLT5LanguageModel, "generate", spy)
    text = sample(["--ckpt_path", str(lm_checkpoint), "--prompt", "def ", "--length", "20"])
    (out,) = outputs
    assert out.shape == (1, len(b"def ") + 20)  # exactly 20 new tokens, i.e. bytes
    # The text is those 20 bytes decoded; invalid UTF-8 becomes U+FFFD, so its length in characters
    # (or re-encoded bytes) need not be 20: the token count above is the check on the length.
    assert text == decode(out[0, 4:]) and 0 < len(text) <= 20
    assert capsys.readouterr().out.endswith("def " + text + "\n")


def test_sample_command_prints_prompt_and_text(lm_checkpoint, capsys):
    assert main(["sample", "--ckpt_path", str(lm_checkpoint), "--prompt", "def ", "--length", "5"]) is None
    assert capsys.readouterr().out.splitlines()[-1].startswith("def ")


def test_sample_rejects_zero_length(capsys):
    with pytest.raises(SystemExit) as info:
        main(["sample", "--ckpt_path", "missing.ckpt", "--length", "0"])
    assert info.value.code == 2
    assert "--length" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, expected", [
    ("--model.init_args.routing.router_type", "nope", "router_type"),  # rejected by the model
    ("--model.init_args.depth", "two", "depth"),  # rejected by the parser (not an int)
])
def test_bad_config_value_names_the_option(option, value, expected, capsys):
    with pytest.raises((ValueError, SystemExit)) as info:
        cli([*TINY_LM, option, value], run=False)
    message = str(info.value) + capsys.readouterr().err
    assert expected in message


def test_progress_bar_can_be_switched_off():
    recipe = "recipes/long_range/passkey.yaml"
    assert main(["fit", *RECIPES[recipe], "--trainer.accelerator", "cpu", "--trainer.fast_dev_run", "true",
                 "--trainer.enable_progress_bar", "false"]) is None


def summary_callbacks(*flags) -> list:
    args = [a for a in TINY_LM if a not in ("--trainer.enable_model_summary", "false")]  # CPU_RUN turns it off
    trainer = cli([*args, *flags], run=False).trainer
    return [type(c).__name__ for c in trainer.callbacks if "ModelSummary" in type(c).__name__]


def test_the_model_summary_is_colt5_s_also_without_a_progress_bar():
    assert summary_callbacks("--trainer.enable_progress_bar", "false") == ["ParamsModelSummary"]


def test_the_model_summary_can_be_switched_off():
    assert summary_callbacks("--trainer.enable_model_summary", "false") == []


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated", "not_lightning"])
def test_sample_names_a_checkpoint_it_cannot_read(damage, lm_checkpoint, tmp_path, capsys):
    path = tmp_path / "bad.ckpt"
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(lm_checkpoint.read_bytes()[:2000])
    elif damage == "not_lightning":
        torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(SystemExit) as info:
        main(["sample", "--ckpt_path", str(path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err


def test_sample_refuses_a_classifier_checkpoint(tmp_path, capsys):
    ckpt_dir = tmp_path / "ckpt"
    cli(["fit", "--config", str(REPO / "recipes/long_range/passkey_encoder.yaml"), "--data.init_args.seq_len", "128",
         "--data.init_args.val_samples", "2", "--trainer.max_steps", "1", "--trainer.logger", "false",
         "--trainer.enable_progress_bar", "false", "--model.init_args.dim", "32", "--model.init_args.depth", "1",
         "--checkpoint.dirpath", str(ckpt_dir), "--trainer.limit_val_batches", "1"])
    with pytest.raises(SystemExit):
        main(["sample", "--ckpt_path", str(ckpt_dir / "last.ckpt")])
    assert "not a language-model checkpoint" in capsys.readouterr().err


def test_fit_ends_by_naming_its_checkpoint_and_the_next_commands(tmp_path, capsys):
    ckpt_dir = tmp_path / "ckpt"
    cli(["fit", *TINY_LM, "--trainer.max_steps", "1", "--checkpoint.dirpath", str(ckpt_dir)])
    out = capsys.readouterr().out
    assert f"checkpoint: {ckpt_dir / 'last.ckpt'}" in out
    assert "--ckpt_path last" in out and f"colt5 sample --ckpt_path {ckpt_dir / 'last.ckpt'}" in out


def test_fit_ends_with_its_validation_metrics_and_where_to_see_its_curves(capsys):
    result = cli(["fit", *TINY_LM, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2"])
    out = capsys.readouterr().out
    loss = float(result.trainer.callback_metrics["val/loss"])
    assert f"colt5: trained 2 steps in " in out and f"val/loss {loss:.4g}" in out
    assert f"tensorboard --logdir {result.trainer.log_dir}" in out


@pytest.mark.parametrize("accelerator, says", [("auto", not torch.cuda.is_available()), ("cpu", False)])
def test_falling_back_to_the_cpu_is_said(accelerator, says, capsys):
    cli(["fit", *TINY_LM, "--trainer.accelerator", accelerator, "--trainer.max_steps", "1"])
    assert ("no GPU found, training on the CPU" in capsys.readouterr().err) == says


def test_the_debug_preset_checks_a_config_and_writes_nothing(tmp_path, capsys):
    cli(["fit", *TINY_LM, *cfg("configs/trainer/debug.yaml")])
    assert "nothing saved; the config works" in capsys.readouterr().out
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_no_cloud_logger_advert_at_the_start_of_a_run(caplog):
    with caplog.at_level("INFO"):
        cli(["fit", *TINY_LM, "--trainer.max_steps", "1"])
    assert "litlogger" not in caplog.text


@pytest.mark.parametrize("option, value, expected", [
    ("--model.init_args.routing.light_heads", "0", "LanguageModelModule: light_heads must be a positive int, got 0"),
    ("--data.init_args.batch_size", "0", "batch_size must be a positive int, got 0"),
    ("--model.init_args.depth", "two", "LanguageModelModule: depth: Expected a <class 'int'>. Got value: two"),
    ("--no_such_option", "3", "unrecognized arguments: --no_such_option"),
])
def test_a_value_a_class_rejects_is_one_line_naming_the_class(option, value, expected, capsys):
    with pytest.raises(SystemExit) as info:
        cli([*TINY_LM, option, value], run=False)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Union subtypes" not in err and len(err.strip().splitlines()) == 2


def test_top_level_help_names_the_tool_and_its_other_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.replace("-\n", "-").split())  # undo argparse's wrapping
    assert "CoLT5" in out and all(f"colt5 {c}" in out for c in ("sample", "plot", "plot-routing"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_a_gpu_preset_without_a_gpu_is_one_line_with_the_way_out(capsys):
    with pytest.raises(SystemExit) as info:
        cli([*cfg("configs/trainer/gpu_bf16.yaml"), *cfg("configs/model/lm/tiny.yaml"), *cfg("configs/data/passkey.yaml"),
             "--data.init_args.seq_len", "128"], run=False)
    assert info.value.code == 2
    assert "--trainer.accelerator cpu" in capsys.readouterr().err


def test_print_config_shows_the_sizes_that_will_train(capsys):
    """The main job trains at the data's 4,096 bytes: --print_config shows that, not the model's default."""
    with pytest.raises(SystemExit) as info:
        main(["fit", *cfg("recipes/language_modeling/cpu.yaml"), "--print_config"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["seq_len"] == printed["data"]["init_args"]["seq_len"] == 4096
    assert printed["model"]["init_args"]["routing"]["light_window_size"] == 64


def test_print_config_skip_null_leaves_out_unset_values(capsys):
    with pytest.raises(SystemExit):
        main(["fit", *cfg("recipes/language_modeling/cpu.yaml"), "--print_config=skip_null"])
    printed = yaml.safe_load(capsys.readouterr().out)

    def values(tree):
        return [v for x in tree.values() for v in values(x)] if isinstance(tree, dict) else [tree]
    assert None not in values(printed) and printed["model"]["init_args"]["seq_len"] == 4096


def test_the_colt5_command_answers_help_without_importing_torch():
    code = ("import sys; from colt5_lightning.entry import main; main(['--help']); "
            "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert all(f"  {name} " in result.stdout for name in ("fit", "validate", "test", "predict", "sample", "plot",
                                                          "plot-routing"))


def test_the_colt5_command_without_a_command_says_which_exist_and_fails():
    from colt5_lightning.entry import main as entry_main
    with pytest.raises(SystemExit) as info:
        entry_main([])
    assert info.value.code == 2


def test_the_colt5_command_hands_everything_else_to_the_cli(capsys):
    from colt5_lightning.entry import main as entry_main
    with pytest.raises(SystemExit) as info:
        entry_main(["fit", "--help"])
    assert info.value.code == 0 and "--model.help" in capsys.readouterr().out


def test_fit_help_is_answered_from_the_cache_the_first_call_built_without_importing_torch(tmp_path):
    code = ("import sys; from colt5_lightning.entry import main\n"
            "try:\n    main(['fit', '--help'])\nexcept SystemExit as done:\n    assert done.code == 0\n"
            "print('IMPORTED' if 'torch' in sys.modules else 'NOT IMPORTED', file=sys.stderr)")
    env = {**os.environ, "COLT5_CACHE_DIR": str(tmp_path), "COLUMNS": "100"}
    first, second = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
                     for _ in range(2))
    assert first.stderr.strip().endswith("IMPORTED") and second.stderr.strip().endswith("NOT IMPORTED")
    assert second.stdout == first.stdout and "--model.help" in second.stdout


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_subcommand_help_starts_with_a_short_usage_and_a_guide_to_the_sections(command, capsys):
    from colt5_lightning.entry import main as entry_main
    with pytest.raises(SystemExit):
        entry_main([command, "--help"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"usage: colt5 {command} [-c RECIPE.yaml [-c MORE.yaml ...]] [--section.key VALUE ...]"
    guide = "\n".join(lines[:20])
    for section in ("trainer", "model", "data", "checkpoint", "ckpt_path"):
        assert f"\n  {section} " in guide
    assert f"colt5 {command} --model.help colt5_lightning.training.LanguageModelModule" in guide


def test_the_help_cache_key_changes_with_the_sources_and_the_terminal_width(monkeypatch):
    from colt5_lightning import help_cache
    key = help_cache.cache_file(["fit", "--help"])
    monkeypatch.setenv("COLUMNS", "57")
    assert help_cache.cache_file(["fit", "--help"]) != key
    monkeypatch.delenv("COLUMNS")
    monkeypatch.setattr(help_cache, "_sources", lambda: [("cli.py", 1, 2)])
    assert help_cache.cache_file(["fit", "--help"]) != key


def test_a_help_call_that_fails_is_not_cached(tmp_path, capsys, monkeypatch):
    from colt5_lightning import help_cache
    monkeypatch.setenv("COLT5_CACHE_DIR", str(tmp_path))  # a cache that no other test has filled

    def broken(argv):
        print("half a help")
        sys.exit(2)
    with pytest.raises(SystemExit):
        help_cache.print_help(["fit", "--help"], broken)
    assert "half a help" in capsys.readouterr().out
    assert not help_cache.cache_file(["fit", "--help"]).exists()


def test_the_quick_help_lists_exactly_the_commands_that_exist():
    from colt5_lightning import cli as cli_module, entry
    assert {name for name, _ in entry.COMMANDS} == {"fit", "validate", "test", "predict"} | set(cli_module.COMMANDS)
    assert set(entry.OWN_COMMANDS) == set(cli_module.COMMANDS)


@pytest.mark.parametrize("message", [
    "RuntimeError: Application timeout caused pair closure",  # gloo (seen when the peer was SIGSTOPped)
    "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500",
    "Timed out waiting 10000ms for send operation to complete",
])
def test_a_lost_distributed_peer_is_one_line(message):
    from colt5_lightning.cli import lost_peer
    line = lost_peer(RuntimeError(f"some context\n{message}"))
    assert line.startswith("another process of this distributed job died or stopped answering") and "\n" not in line


def test_other_errors_are_not_taken_for_a_lost_peer():
    from colt5_lightning.cli import lost_peer
    assert lost_peer(RuntimeError("CUDA out of memory")) is None
