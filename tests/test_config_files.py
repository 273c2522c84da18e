"""base_configs: a recipe names the shared configs it builds on and runs alone."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from colt5_lightning.cli import CoLT5CLI, cli
from colt5_lightning.config_files import ConfigFileError, expand_base_configs

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, data: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_bases_come_first_relative_to_the_file_that_names_them(tmp_path):
    write(tmp_path / "shared" / "a.yaml", {"trainer": {"max_steps": 1}})
    write(tmp_path / "shared" / "b.yaml", {"base_configs": ["a.yaml"], "trainer": {"max_steps": 2}})
    recipe = write(tmp_path / "recipes" / "r.yaml", {"base_configs": ["../shared/b.yaml"], "seed_everything": 3})
    args = expand_base_configs(["fit", "--config", recipe, "--trainer.max_steps", "9"])
    assert args[0] == "fit" and args[-2:] == ["--trainer.max_steps", "9"]
    configs = args[1:-2]
    assert configs[0::2] == ["--config"] * 3
    assert Path(configs[1]).resolve() == (tmp_path / "shared" / "a.yaml").resolve()
    assert yaml.safe_load(configs[3]) == {"trainer": {"max_steps": 2}}  # b without its base_configs
    assert yaml.safe_load(configs[5]) == {"seed_everything": 3}


def test_files_without_bases_and_other_arguments_pass_unchanged(tmp_path):
    plain = write(tmp_path / "plain.yaml", {"seed_everything": 1})
    args = ["fit", f"--config={plain}", "--config", "{seed_everything: 2}", "--trainer.max_steps", "1"]
    assert expand_base_configs(args) == ["fit", "--config", plain, "--config", "{seed_everything: 2}",
                                         "--trainer.max_steps", "1"]


@pytest.mark.parametrize("bases, match", [
    (["missing.yaml"], "names missing.yaml, but there is no file"),
    ("a.yaml", "must be a list of YAML file paths"),
    (["self.yaml"], "form a cycle"),
])
def test_bad_base_configs_are_named(tmp_path, bases, match):
    write(tmp_path / "a.yaml", {})
    path = write(tmp_path / "self.yaml", {"base_configs": bases})
    with pytest.raises(ConfigFileError, match=match):
        expand_base_configs(["--config", path])


def test_the_cli_reports_a_bad_base_config_in_one_line(tmp_path, capsys):
    path = write(tmp_path / "r.yaml", {"base_configs": ["nowhere.yaml"]})
    with pytest.raises(SystemExit) as exit_info:
        cli(["--config", path], run=False)
    assert exit_info.value.code == 2
    assert "base_configs names nowhere.yaml" in capsys.readouterr().err


def test_a_gpu_recipe_alone_gets_its_trainer_and_model_presets_and_keeps_its_own_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(CoLT5CLI, "instantiate_classes", lambda self: None)  # no GPU here: parse only
    config = cli(["--config", str(REPO / "recipes/language_modeling/gpu_8k.yaml")], run=False).config
    assert config.trainer.precision == "bf16-mixed" and config.trainer.accelerator == "gpu"  # gpu_bf16.yaml
    assert config.model.init_args.dim == 512  # configs/model/lm/base.yaml
    assert config.model.init_args.optim.lr == 6.0e-4  # the recipe's own value
    assert config.model.init_args.seq_len == 8192  # linked from the recipe's data


def test_the_short_config_flag_is_expanded_too(tmp_path):
    base = write(tmp_path / "base.yaml", {"seed_everything": 1})
    recipe = write(tmp_path / "r.yaml", {"base_configs": ["base.yaml"], "trainer": {"max_steps": 2}})
    args = expand_base_configs(["-c", recipe])
    assert args[:2] == ["--config", base] and yaml.safe_load(args[3]) == {"trainer": {"max_steps": 2}}
