"""Every YAML under configs/ and recipes/ parses, and builds a model, a DataModule and a Trainer
through the `colt5` CLI when stacked with the pieces it needs (nothing is trained here)."""
from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import yaml

from colt5_lightning import cli as cli_module
from colt5_lightning.cli import CoLT5CLI, cli
from colt5_lightning.training import BlockFSDPStrategy

REPO = Path(__file__).resolve().parents[1]
YAMLS = sorted(p.relative_to(REPO).as_posix() for d in ("configs", "recipes") for p in (REPO / d).rglob("*.y*ml"))

LM_DATA = "configs/data/stdlib_bytes.yaml"
CPU = "configs/trainer/cpu.yaml"
GPU_ONLY = ("accelerator: gpu",)  # presets that need a GPU to build their Trainer

# Per file: the configs stacked before it (the file under test goes last, so its values win) and
# extra command-line arguments. "@npz" is replaced by a feature-map file made in tmp_path.
STACKS = {
    "configs/data/feature_maps.yaml": (["configs/model/image/tiny.yaml"], ["--data.init_args.path", "@npz"]),
    "configs/data/listops.yaml": (["configs/model/sequence/tiny.yaml"], []),
    "configs/data/passkey.yaml": (["configs/model/lm/tiny.yaml"], []),
    "configs/data/pathfinder.yaml": (["configs/model/image/tiny.yaml"], []),
    "configs/data/stdlib_bytes.yaml": (["configs/model/lm/tiny.yaml"], []),
    "configs/model/dense.yaml": (["configs/model/lm/tiny.yaml", LM_DATA], []),
    "configs/model/image/base.yaml": (["configs/data/pathfinder.yaml"], ["--data.init_args.image_size", "64"]),
    "configs/model/image/small.yaml": (["configs/data/pathfinder.yaml"], []),
    "configs/model/image/tiny.yaml": (["configs/data/pathfinder.yaml"], []),
    "configs/model/lm/base.yaml": ([LM_DATA], []),
    "configs/model/lm/small.yaml": ([LM_DATA], []),
    "configs/model/lm/tiny.yaml": ([LM_DATA], []),
    "configs/model/sequence/base.yaml": (["configs/data/listops.yaml"], []),
    "configs/model/sequence/small.yaml": (["configs/data/listops.yaml"], []),
    "configs/model/sequence/tiny.yaml": (["configs/data/listops.yaml"], []),
    "configs/trainer/cpu.yaml": (["configs/model/lm/tiny.yaml", LM_DATA], []),
    "configs/trainer/ddp_cpu.yaml": (["configs/model/lm/tiny.yaml", LM_DATA], []),
    "configs/trainer/debug.yaml": (["configs/model/lm/tiny.yaml", LM_DATA], []),
    # GPU presets: parsed and checked against the Trainer's signature, not built (no GPU here)
    "configs/trainer/ddp.yaml": (["configs/model/lm/tiny.yaml", LM_DATA], []),
    "configs/trainer/fsdp.yaml": (["configs/model/lm/tiny.yaml", LM_DATA], []),
    "configs/trainer/gpu_bf16.yaml": (["configs/model/lm/tiny.yaml", LM_DATA], []),
    "configs/trainer/gpu_fp16.yaml": (["configs/model/lm/tiny.yaml", LM_DATA], []),
    "configs/trainer/multinode.yaml": (["configs/model/lm/tiny.yaml", LM_DATA, "configs/trainer/ddp.yaml"], []),
    # recipes: complete, each alone (the GPU LM recipes pull in their presets through base_configs)
    "recipes/image_feature_map/diffusion_pathfinder.yaml": ([], []),
    "recipes/image_feature_map/mark_colour.yaml": ([], []),
    "recipes/image_feature_map/matching_marks.yaml": ([], []),
    "recipes/image_feature_map/pathfinder.yaml": ([], []),
    "recipes/image_feature_map/vit_pathfinder.yaml": ([], []),
    "recipes/language_modeling/cpu.yaml": ([], []),
    "recipes/language_modeling/gpu_16k.yaml": ([], []),
    "recipes/language_modeling/gpu_8k.yaml": ([], []),
    "recipes/long_range/listops.yaml": ([], []),
    "recipes/long_range/passkey.yaml": ([], []),
    "recipes/long_range/passkey_encoder.yaml": ([], []),
    "recipes/long_range/passkey_decoder.yaml": ([], []),
    "configs/model/light_only.yaml": (["configs/model/lm/tiny.yaml", LM_DATA], []),
}
LINKED = {"vocab_size", "seq_len", "max_seq_len", "num_classes", "image_size", "in_channels", "num_readout", "readout"}
TOP_LEVEL = {"base_configs", "seed_everything", "trainer", "model", "data", "checkpoint", "router_monitor", "optimizer",
             "lr_scheduler", "ckpt_path"}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLT5_CACHE_DIR", str(tmp_path / "cache"))


def _feature_maps(tmp_path: Path) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path / "maps.npz"
    np.savez(path, x=rng.standard_normal((8, 3, 16, 16)).astype(np.float32), y=np.arange(8) % 3)
    return str(path)


def _args(name: str, tmp_path: Path) -> list:
    stack, extra = STACKS[name]
    args = []
    for piece in [*stack, name]:
        args += ["--config", str(REPO / piece)]
    return args + [_feature_maps(tmp_path) if a == "@npz" else a for a in extra]


def _scalars(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _scalars(value, f"{prefix}{key}.")
        elif not isinstance(value, list):
            yield f"{prefix}{key}", value


def _lookup(config, key: str):
    """config[key], also where the key goes on inside a dict-valued argument (router_kwargs.eps)."""
    parts = key.split(".")
    for cut in range(len(parts), 0, -1):
        head = ".".join(parts[:cut])
        if head in config:
            value = config[head]
            for part in parts[cut:]:
                value = value[part]
            return value
    raise KeyError(key)


def _assert_values_kept(config, raw: dict, extra: list) -> None:
    """The file's own scalar values are the ones in the parsed config (unless linked from the data
    or overridden on the command line)."""
    raw = {key: value for key, value in raw.items() if key != "base_configs"}
    for key, value in _scalars(raw):
        if key.rsplit(".", 1)[-1] in LINKED or f"--{key}" in extra:
            continue
        parsed = _lookup(config, key)
        assert parsed == value or str(parsed) == str(value), f"{key}: file has {value!r}, parsed {parsed!r}"


def test_every_config_has_a_stack():
    assert YAMLS, "no YAML files found"
    assert sorted(STACKS) == YAMLS, "add new YAML files to STACKS (and drop removed ones)"


@pytest.mark.parametrize("name", YAMLS)
def test_config_parses_and_builds(name, tmp_path, monkeypatch):
    text = (REPO / name).read_text()
    raw = yaml.safe_load(text)
    assert isinstance(raw, dict) and set(raw) <= TOP_LEVEL, f"unexpected top-level keys {set(raw) - TOP_LEVEL}"

    args = _args(name, tmp_path)
    files = [REPO / p for p in [*STACKS[name][0], name]]
    files += [(REPO / name).parent / base for base in raw.get("base_configs", [])]
    gpu_only = any(marker in f.read_text() for f in files for marker in GPU_ONLY)
    if gpu_only:  # parse and validate only: the GPU Trainer can't be built here
        monkeypatch.setattr(CoLT5CLI, "instantiate_classes", lambda self: None)
    result = cli(args, run=False)
    _assert_values_kept(result.config, raw, STACKS[name][1])
    if gpu_only:
        return
    assert isinstance(result.model, pl.LightningModule)
    assert isinstance(result.datamodule, pl.LightningDataModule)
    assert isinstance(result.trainer, pl.Trainer)
    names = {type(c).__name__ for c in result.trainer.callbacks}
    assert {"LastCheckpoint", "RouterMonitor"} <= names


@pytest.mark.parametrize("preset", ["gpu_bf16", "ddp"])
def test_gpu_trainer_preset_builds_on_cpu_with_overrides(preset, tmp_path):
    args = _args(f"configs/trainer/{preset}.yaml", tmp_path)
    result = cli(args + ["--trainer.accelerator", "cpu", "--trainer.devices", "1"], run=False)
    assert isinstance(result.trainer, pl.Trainer)
    assert result.trainer.precision == yaml.safe_load((REPO / f"configs/trainer/{preset}.yaml").read_text())[
        "trainer"]["precision"]


def test_block_fsdp_strategy_constructs_from_preset():
    assert isinstance(BlockFSDPStrategy(), BlockFSDPStrategy)
    strategy = yaml.safe_load((REPO / "configs/trainer/fsdp.yaml").read_text())["trainer"]["strategy"]
    assert strategy["class_path"] == "colt5_lightning.training.BlockFSDPStrategy"
    built = cli_module._import(strategy["class_path"])(**strategy["init_args"])
    assert isinstance(built, BlockFSDPStrategy)
