"""The `colt5` command: LightningCLI (fit / validate / test / predict) plus `colt5 sample`.

    colt5 fit --config recipes/language_modeling/cpu.yaml
    colt5 fit --config recipes/language_modeling/gpu_8k.yaml    # stacks configs/ pieces (base_configs)
    colt5 sample --ckpt_path logs/byte_lm_cpu --prompt "def " --length 200   # the newest run's last.ckpt
    colt5 plot logs/passkey_encoder/version_0 --out curves.png
    colt5 plot-routing --ckpt_path logs/passkey_encoder --out routing.png
"""
from __future__ import annotations

import argparse
import logging
import inspect
import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import lightning.pytorch as pl
import torch
import yaml
from jsonargparse import DefaultHelpFormatter, Namespace
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from . import entry
from .config_files import ConfigFileError, expand_base_configs
from .training import LastCheckpoint, NonFiniteGuard, RandomStateCheckpoint, RouterMonitor
from .training.checkpoint import PREVIOUS, READ_ERRORS, read_checkpoint, resumable_checkpoint
from .training.progress import ParamsModelSummary, StepsProgressBar
from .training.resume import describe, setting_differences, split_changes, with_defaults_of_newer_settings
from .training.run_dirs import (ENV as RUN_DIR_ENV, LAST, RunDirError, claim_run_dir, find_checkpoint,
                                is_worker_process, newest_run_with_checkpoint)

# What a DataModule knows that the model must agree with: data attribute -> model init args.
# A size the model does not take is left out (a wrapped model may get it another way); a data
# attribute in MODEL_MUST_TAKE changes what the task means, so a model without it is an error.
MODEL_MUST_TAKE = ("readout",)
DATA_TO_MODEL = {
    "vocab_size": ("vocab_size",),
    "seq_len": ("seq_len", "max_seq_len"),
    "num_classes": ("num_classes",),
    "image_size": ("image_size",),
    "in_channels": ("in_channels",),
    "num_readout": ("num_readout",),
    "readout": ("readout",),
}


OTHER_COMMANDS = ("Other commands, each with --help: "
                  + "; ".join(f"`colt5 {name}`: {text}" for name, text in entry.COMMANDS if name in entry.OWN_COMMANDS)
                  + ". A first run: `colt5 fit --config recipes/language_modeling/cpu.yaml`.")


SUBCOMMAND_GUIDE = """A run is a recipe (YAML) plus the changes you give on the command line:

  colt5 {name} --config recipes/language_modeling/cpu.yaml --model.init_args.optim.lr 5e-4

The sections, each settable in YAML or as --section.key VALUE:
  trainer      Lightning's Trainer (max_steps, precision, devices, default_root_dir, ...)
  model        the LightningModule; its routed-block settings are one `routing:` block and its
               optimiser one `optim:` block, each field described by
               colt5 {name} --model.help colt5_lightning.training.LanguageModelModule
               (or SequenceClassificationModule, ImageClassificationModule, DiffusionModule)
  data         the DataModule: colt5 {name} --data.help colt5_lightning.data.PasskeyDataModule
  checkpoint   last.ckpt: every_n_train_steps, dirpath, keep_previous
  ckpt_path    a checkpoint, a run folder or `last` (the newest run's last.ckpt) to resume from
  --print_config   the resolved config of a recipe, as it will run

Every option follows."""


class GuideFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's lines kept as written (argparse would reflow the
    guide into one paragraph). A module-level class: DDP's spawned processes unpickle the parser."""


class CoLT5CLI(LightningCLI):
    """LightningCLI with omegaconf interpolation, a last.ckpt-keeping checkpoint, the router
    monitor, and the model's data-dependent sizes filled in from the DataModule."""

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        self.parser.description = ("colt5: train and use CoLT5 conditionally routed transformers "
                                   "(Lightning's fit / validate / test / predict).")
        self.parser.epilog = OTHER_COMMANDS
        for name, subparser in getattr(self, "_subcommand_parsers", {}).items():
            subparser.usage = f"colt5 {name} [-c RECIPE.yaml [-c MORE.yaml ...]] [--section.key VALUE ...]"
            subparser.description = SUBCOMMAND_GUIDE.format(name=name)
            if issubclass(GuideFormatter, subparser.formatter_class):
                subparser.formatter_class = GuideFormatter

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(LastCheckpoint, "checkpoint")
        # last.ckpt every 100 steps and on an exception, not only when training ends: with
        # save_top_k 0 ModelCheckpoint saves nothing until then (a killed run lost everything);
        # no version counter: a rerun overwrites last.ckpt (atomically) instead of writing last-v1.ckpt
        # beside a stale last.ckpt that `colt5 sample` and `--ckpt_path last` would then read
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 0,
                             "checkpoint.every_n_train_steps": 100, "checkpoint.save_on_exception": True,
                             "checkpoint.enable_version_counter": False})
        parser.add_lightning_class_args(RouterMonitor, "router_monitor")
        parser.add_lightning_class_args(NonFiniteGuard, "nonfinite_guard")
        parser.add_lightning_class_args(RandomStateCheckpoint, "random_state")

    def parse_arguments(self, parser, args) -> None:
        # Sizes that come from the data may have no default in the model (SequenceClassificationModule's
        # vocab_size, num_classes): fill them in from the data before the config is validated.
        parse = parser.parse_object if isinstance(args, (dict, Namespace)) else parser.parse_args
        args, print_config = split_print_config(args)
        try:
            self.config = parse(args, _skip_validation=True)
        except argparse.ArgumentError as ex:  # a value of the wrong type: one line, not the whole usage
            fail(readable_error(ex))
        subcommand = self.config.get("subcommand")
        data_error = None
        try:
            link_data_to_model(self.config[subcommand] if subcommand else self.config)
        except (TypeError, ValueError, OSError) as ex:  # a bad data config: say so, not "vocab_size missing"
            data_error = ex
        try:
            parser.validate(self.config)
        except (TypeError, KeyError) as ex:
            fail(f"the data config could not be built: {data_error}" if data_error is not None
                 else readable_error(ex))
        if data_error is not None:
            fail(f"the data config could not be built: {readable_error(data_error)}")
        if print_config is not None:  # printed here, after the data's sizes reached the model
            subcommand_parser = self._subcommand_parsers[subcommand] if subcommand else parser
            print(subcommand_parser.dump(self.config[subcommand] if subcommand else self.config,
                                         skip_none=print_config == "skip_null"), end="")
            sys.exit(0)

    def instantiate_classes(self) -> None:
        # a bad value (e.g. light_heads 0) is rejected by the class itself; jsonargparse would bury
        # that one line in the Union-subtype report of every class it tried
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as ex:
            if "Does not validate against any of the Union subtypes" not in str(ex):
                raise  # not a config value a class rejected: keep the traceback
            fail(readable_error(ex))

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config  # linked in parse_arguments
        given = config.get("ckpt_path")
        try:
            place_run(config)
        except RunDirError as ex:
            fail(str(ex))
        ckpt_path = config.get("ckpt_path")
        if given == "last" and ckpt_path != "last":  # resolved to a run's last.ckpt: if damaged, the one before
            chosen, problem = resumable_checkpoint(ckpt_path)
            if chosen != ckpt_path:
                print(f"colt5: {ckpt_path} cannot be read ({type(problem).__name__}); resuming from {chosen}, "
                      "the checkpoint it replaced", file=sys.stderr)
                config["ckpt_path"] = ckpt_path = chosen
        if ckpt_path and ckpt_path != "last" and os.path.isfile(ckpt_path):  # given, or `last` resolved
            check_model_matches_checkpoint(config["model"], ckpt_path)

    def _parse_ckpt_path(self) -> None:
        # a folder stands for its newest run's last.ckpt (training.run_dirs.find_checkpoint)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path != "last" and os.path.isdir(ckpt_path):
            try:
                self.config[subcommand]["ckpt_path"] = str(find_checkpoint(ckpt_path))
            except FileNotFoundError as ex:
                fail(f"--ckpt_path: {ex}")
        # LightningCLI would put the checkpoint's hyper-parameters over the command line's here, so a
        # changed router or lr would be ignored in silence; before_instantiate_classes compares them

    def before_fit(self) -> None:
        self._fit_started = time.monotonic()
        config = self.config[self.subcommand]
        if (str(config["trainer"].get("accelerator")) == "auto" and self.trainer.is_global_zero
                and isinstance(self.trainer.accelerator, CPUAccelerator)):
            print(f"colt5: no GPU found, training on the CPU with {torch.get_num_threads()} threads "
                  "(recipe headers say how long that takes)", file=sys.stderr)

    def after_fit(self) -> None:
        """Says what the run reached, where its checkpoint is and what to do next, instead of
        ending silently."""
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        if trainer.fast_dev_run:
            print("colt5: fast_dev_run: one batch trained and validated, nothing saved; the config works")
            return
        last = getattr(trainer.checkpoint_callback, "last_model_path", "") if trainer.checkpoint_callback else ""
        print("\n".join(fit_summary(trainer, last, time.monotonic() - getattr(self, "_fit_started", time.monotonic()))))

    def _instantiate_trainer(self, config, callbacks):
        # a default callback whose feature the config turns off would be refused (progress bar) or
        # run anyway (a model summary passed in ignores enable_model_summary)
        off = {flag: config.get(flag) is False for flag in ("enable_progress_bar", "enable_model_summary")}
        kept = [c for c in self.trainer_defaults.get("callbacks", [])
                if not (off["enable_progress_bar"] and isinstance(c, StepsProgressBar))
                and not (off["enable_model_summary"] and isinstance(c, ParamsModelSummary))]
        self.trainer_defaults = {**self.trainer_defaults, "callbacks": kept}
        try:
            return super()._instantiate_trainer(config, callbacks)
        except MisconfigurationException as ex:
            hint = ""
            if str(config.get("accelerator")) in ("gpu", "cuda") and not torch.cuda.is_available():
                hint = ("; this machine has no CUDA GPU: drop the GPU preset or add "
                        "--trainer.accelerator cpu --trainer.precision 32-true")
            fail(f"the trainer could not be built: {ex}{hint}")


def fit_summary(trainer: pl.Trainer, checkpoint: str, seconds: float) -> List[str]:
    """The lines printed when `colt5 fit` ends: steps and time, the validation metrics, the
    latest sample, and the next commands."""
    metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items())
               if k.startswith("val/") and getattr(v, "numel", lambda: 1)() == 1}
    minutes, secs = divmod(int(round(seconds)), 60)
    lines = [f"colt5: trained {trainer.global_step} steps in {minutes} min {secs} s"
             + ("; " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()) if metrics else "")]
    sample = getattr(trainer.lightning_module, "last_sample", None)
    if sample:
        lines.append(f"  latest sample: {sample[:120]!r}")
    if checkpoint:
        lines += [f"  checkpoint: {checkpoint}",
                  "  resume:     the same command plus --ckpt_path last (and a larger --trainer.max_steps)",
                  f"  evaluate:   colt5 validate --config <the same configs> --ckpt_path {checkpoint}"]
        if "sample_prompt" in getattr(trainer.lightning_module, "hparams", {}):
            lines.append(f"  sample:     colt5 sample --ckpt_path {checkpoint} --prompt \"def \" --length 200")
    # the first logger's folder, not trainer.log_dir: that one is a broadcast, and only rank 0 gets here
    log_dir = getattr(trainer.loggers[0], "log_dir", None) if trainer.loggers else None
    if log_dir:
        lines.append(f"  curves:     tensorboard --logdir {log_dir}   or   colt5 plot {log_dir}")
    return lines


def place_run(config) -> Optional[Path]:
    """Gives the run its own folder under trainer.default_root_dir (see training.run_dirs): the
    default loggers (TensorBoard and CSV) and, unless checkpoint.dirpath is given, the
    checkpoints go there. `ckpt_path last` becomes the newest last.ckpt: checkpoint.dirpath's
    when given, else that of the newest run folder holding one. Returns the folder, or None for
    a fast_dev_run (which logs and saves nothing)."""
    trainer = config["trainer"]
    root = Path(trainer.get("default_root_dir") or DEFAULT_ROOT_DIR)
    if config.get("ckpt_path") == "last":
        dirpath = (config.get("checkpoint") or {}).get("dirpath")
        newest = newest_run_with_checkpoint(root)
        last = Path(dirpath) / "last.ckpt" if dirpath else (newest / LAST if newest else None)
        if last is not None and last.is_file():
            config["ckpt_path"] = str(last)  # else Lightning says there is none and starts afresh
    if trainer.get("fast_dev_run"):
        return None
    if is_worker_process():  # rank 0 has claimed the folder; its checkpoint folder is broadcast at setup
        run = Path(os.environ.get(RUN_DIR_ENV) or root / "version_of_rank_0")
    else:
        run = claim_run_dir(root)
        os.environ[RUN_DIR_ENV] = str(run)  # inherited by the processes Lightning launches for DDP
    if trainer.get("logger") in (None, True):
        trainer["logger"] = [_logger_config(cls, save_dir=str(run.parent), name="", version=run.name)
                             for cls in (TensorBoardLogger, CSVLogger)]
    if config.get("checkpoint") is not None and not config["checkpoint"].get("dirpath"):
        config["checkpoint"]["dirpath"] = str(run / "checkpoints")
    return run


def _logger_config(cls, **init_args) -> Namespace:
    return Namespace(class_path=f"{cls.__module__}.{cls.__name__}", init_args=Namespace(**init_args))


def check_model_matches_checkpoint(model_config, ckpt_path: str) -> None:
    """Fails when the model the config builds is not the one the checkpoint holds (another class,
    router, window, width...); prints the settings it changes that a resume may change (see
    training.resume)."""
    try:
        saved = read_checkpoint(ckpt_path).get("hyper_parameters", {})
    except READ_ERRORS as ex:
        fail(damaged_checkpoint(ckpt_path, ex))
    class_path = model_config.get("class_path")
    if saved.get("_class_path") and class_path and saved["_class_path"] != class_path:
        fail(f"{ckpt_path} holds a {saved['_class_path'].rsplit('.', 1)[-1]}, but this run builds a "
             f"{class_path.rsplit('.', 1)[-1]}: pass the configs the checkpoint was trained with")
    try:
        module_class = _import(class_path) if class_path else None
    except (ImportError, AttributeError, ValueError):
        module_class = None
    allowed = getattr(module_class, "settings_a_resume_may_change", ())
    if module_class is not None:
        saved = with_defaults_of_newer_settings(saved, module_class)
    refused, accepted = split_changes(setting_differences(saved, model_config.get("init_args") or {}), allowed)
    if refused:
        fail(f"{ckpt_path} was trained as another model ({describe(refused)}); its weights would be read by "
             "a model they were not trained for. Use the checkpoint's values, or start a new run without --ckpt_path")
    if accepted:
        print(f"colt5: changed from the checkpoint: {describe(accepted)}", file=sys.stderr)


def damaged_checkpoint(path, ex: Exception) -> str:
    first_line = (str(ex).splitlines() or [""])[0][:160]
    reason = f"{type(ex).__name__}: {first_line}" if first_line else type(ex).__name__
    previous = Path(path).parent / PREVIOUS
    other = (f"e.g. {previous}, the checkpoint it replaced," if previous.is_file() and previous != Path(path)
             else "another one")
    return (f"cannot resume from {path}: the file is damaged or not a checkpoint ({reason}). "
            f"Delete it to start afresh, or pass {other} with --ckpt_path")


def fail(message: str) -> None:
    """Ends the command with one readable error line (exit status 2, as for a usage error)."""
    print(f"colt5: error: {message}\n(`colt5 fit --help` lists the options)", file=sys.stderr)
    sys.exit(2)


def readable_error(ex: Exception) -> str:
    """The class's own complaint out of jsonargparse's "Does not validate against any of the Union
    subtypes" report, as one line naming the class and key; other errors unchanged."""
    text = str(ex)
    if "Errors:" not in text:
        return text
    block = text.split("Errors:", 1)[1].split("Given value type:", 1)[0]
    items, current = [], None
    for line in (line.strip() for line in block.splitlines()):
        if line.startswith("- "):
            current = [line[2:]]
            items.append(current)
        elif line and current is not None:
            current.append(line)
    reasons = []
    for item in items:
        if item[0].startswith("Expected a <class 'NoneType'>"):
            continue
        parts = [re.sub(r"^Problem with given class_path '([^']+)':$", r"\1:", part) for part in item]
        reasons.append(" ".join(re.sub(r'^Parser key "([^"]+)":$', r"\1:", part) for part in parts))
    owner = re.search(r"class_path='([^']+)'", text)
    prefix = f"{owner.group(1)}: " if owner and not any(owner.group(1) in r for r in reasons) else ""
    return prefix + "; ".join(reasons) if reasons else text


def split_print_config(args):
    """(args without --print_config, its value: '' bare, 'skip_null', or None when absent).

    jsonargparse prints the config while parsing, before the data's sizes are copied to the model,
    so `--print_config` would show a model seq_len that is not the one that trains."""
    if not isinstance(args, (list, tuple)):
        return args, None
    rest, value = [], None
    for arg in args:
        if arg == "--print_config" or arg.startswith("--print_config="):
            value = arg.partition("=")[2]
            if value not in ("", "skip_null"):
                fail(f"--print_config={value}: only --print_config and --print_config=skip_null are supported")
        else:
            rest.append(arg)
    return rest, value


def link_data_to_model(config) -> None:
    """Copies vocabulary size, sequence length, image size... from the data to the model config.

    The data is the one source of these sizes: its values replace the model's, so a model never
    disagrees with the batches it is fed. The DataModule is built once here to read them (cheap:
    datasets are made in setup).
    """
    data_cfg, model_cfg = config.get("data"), config.get("model")
    if not data_cfg or not model_cfg or not data_cfg.get("class_path") or not model_cfg.get("class_path"):
        return
    data = _import(data_cfg["class_path"])(**dict(data_cfg.get("init_args") or {}))
    model_params = inspect.signature(_import(model_cfg["class_path"]).__init__).parameters
    init_args = model_cfg["init_args"]
    for data_attr, targets in DATA_TO_MODEL.items():
        if not hasattr(type(data), data_attr) and data_attr not in vars(data):
            continue
        value = getattr(data, data_attr)
        if data_attr in MODEL_MUST_TAKE and not any(target in model_params for target in targets):
            raise ValueError(f"{type(data).__name__} has {data_attr}={value!r}, which "
                             f"{model_cfg['class_path'].rsplit('.', 1)[-1]} does not take: a model with a "
                             f"{data_attr} argument must read it (colt5_lightning.training.ImageClassificationModule)")
        for target in targets:
            if target in model_params:
                init_args[target] = value


def _import(class_path: str):
    module, _, name = class_path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def cli(args: Optional[List[str]] = None, run: bool = True) -> CoLT5CLI:
    # the CSV logger finds the run's folder already holding the TensorBoard files and config.yaml;
    # the folder is new (see place_run), so its "previous log files will be deleted" is noise
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    # a resumed run writes to a new folder; with save_top_k 0 there is no best-k state to reload
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_drop_noise)
    if args is None or isinstance(args, (list, tuple)):
        try:
            args = expand_base_configs(sys.argv[1:] if args is None else args)
        except (ConfigFileError, OSError, yaml.YAMLError) as ex:
            fail(str(ex))
    return CoLT5CLI(
        model_class=pl.LightningModule,
        datamodule_class=pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": False},
        save_config_kwargs={"overwrite": True},
        trainer_defaults=trainer_defaults(),
        args=args,
        run=run,
    )


DEFAULT_ROOT_DIR = "logs/colt5"


NOISE = (
    "try installing [litlogger]",  # Lightning 2.6 advertises its cloud logger at the start of every run
    "Trainer already configured with model summary callbacks",  # ours (ParamsModelSummary) replaces its default
)


def _drop_noise(record: logging.LogRecord) -> bool:
    """Lightning's start-of-run messages that a user has nothing to act on."""
    return not any(text in str(record.msg) for text in NOISE)


def trainer_defaults() -> dict:
    """Built afresh for every call, as new objects rather than lazy instances: a lazy instance
    turns into its object when first used, so one run's progress bar (and, through it, its
    trainer) would be handed to the next run in the same process. The loggers are left to
    place_run, which puts them in the run's own folder."""
    return {"default_root_dir": DEFAULT_ROOT_DIR, "callbacks": [StepsProgressBar(), ParamsModelSummary()]}


def sample(args: List[str]) -> str:
    """colt5 sample: text from a language-model checkpoint."""
    from .training import LanguageModelModule

    parser = argparse.ArgumentParser(prog="colt5 sample", description="Sample text from a language-model checkpoint.")
    parser.add_argument("--ckpt_path", required=True, help=CKPT_HELP)
    parser.add_argument("--prompt", default="def ")
    parser.add_argument("--length", type=int, default=200, help="number of new bytes")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top_k", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(args)
    if opts.length <= 0:
        parser.error(f"--length must be positive, got {opts.length}")
    opts.ckpt_path = resolve_checkpoint(parser, opts.ckpt_path)
    if "sample_prompt" not in checkpoint_hparams(parser, opts.ckpt_path):
        parser.error(f"{opts.ckpt_path} is not a language-model checkpoint (colt5 sample needs one from "
                     "LanguageModelModule, e.g. recipes/language_modeling/cpu.yaml)")
    module = LanguageModelModule.load_from_checkpoint(opts.ckpt_path, map_location="cpu")
    text = module.sample(opts.prompt, opts.length, temperature=opts.temperature, top_k=opts.top_k,
                         seed=opts.seed, include_prompt=False)
    print(opts.prompt + text)
    return text


CKPT_HELP = ("a checkpoint file, a run folder (its checkpoints/last.ckpt) or a recipe's log folder (the "
             "newest run's last.ckpt), e.g. logs/byte_lm_cpu")


def resolve_checkpoint(parser: argparse.ArgumentParser, path: str) -> str:
    """The checkpoint file meant by --ckpt_path (see training.run_dirs.find_checkpoint)."""
    try:
        return str(find_checkpoint(path))
    except FileNotFoundError as ex:
        parser.error(str(ex))


def checkpoint_hparams(parser: argparse.ArgumentParser, path: str) -> dict:
    """The hyper-parameters of a Lightning checkpoint, or a parser error saying why it can't be read."""
    if not os.path.isfile(path):
        parser.error(f"no checkpoint file at {path}")
    try:
        return read_checkpoint(path)["hyper_parameters"]
    except (*READ_ERRORS, KeyError) as ex:  # truncated, empty, not Lightning's
        parser.error(f"cannot read a Lightning checkpoint at {path} ({type(ex).__name__}: {ex})")


CURVES = ("train/loss", "val/loss", "val/bpb", "train/exact_acc", "val/exact_acc", "val/acc", "train/length")


def plot(args: List[str]) -> List[str]:
    """colt5 plot: metric curves of one or more runs, side by side, as PNG files."""
    from .reporting import plot_curves, read_metrics

    parser = argparse.ArgumentParser(prog="colt5 plot", description="Plot the metric curves of runs "
                                     "(their CSVLogger folders) into one PNG, one line per run.")
    parser.add_argument("runs", nargs="+", help="run folders or metrics.csv files")
    parser.add_argument("--labels", help="comma-separated names for the runs (default: folder names)")
    parser.add_argument("--metrics", default=",".join(CURVES), help="comma-separated metrics to draw, if logged")
    parser.add_argument("--out", default="curves.png", help="the PNG to write")
    parser.add_argument("--smooth", type=int, default=20, help="moving average over train/* points")
    opts = parser.parse_args(args)
    labels = opts.labels.split(",") if opts.labels else [str(r).rstrip("/") for r in opts.runs]
    if len(labels) != len(opts.runs):
        parser.error(f"--labels names {len(labels)} runs, but {len(opts.runs)} were given")
    try:
        runs = {label: read_metrics(run) for label, run in zip(labels, opts.runs)}
        drawn = plot_curves(runs, opts.metrics.split(","), opts.out, smooth=opts.smooth)
    except (FileNotFoundError, ValueError, ImportError) as ex:
        parser.error(str(ex))
    print(f"wrote {opts.out} ({', '.join(drawn)})")
    return drawn


def plot_routing_cmd(args: List[str]) -> None:
    """colt5 plot-routing: routing weight by position on a held-out passkey example."""
    from .reporting import passkey_example, plot_routing, routing_by_position
    from .training import LanguageModelModule, SequenceClassificationModule

    parser = argparse.ArgumentParser(prog="colt5 plot-routing", description="Draw each router's weight by "
                                     "position for a held-out passkey example, needle marked, from a checkpoint "
                                     "of the passkey recipes (encoder readout or language model).")
    parser.add_argument("--ckpt_path", required=True, help=CKPT_HELP)
    parser.add_argument("--out", default="routing.png")
    parser.add_argument("--seq_len", type=int, help="default: the model's max_seq_len")
    parser.add_argument("--index", type=int, default=0, help="which held-out sample")
    opts = parser.parse_args(args)
    opts.ckpt_path = resolve_checkpoint(parser, opts.ckpt_path)
    hparams = checkpoint_hparams(parser, opts.ckpt_path)
    readout = int(hparams.get("num_readout") or 0)
    if not readout and "sample_prompt" not in hparams:
        parser.error(f"{opts.ckpt_path} is neither a passkey-readout classifier nor a language model checkpoint")
    cls = SequenceClassificationModule if readout else LanguageModelModule
    module = cls.load_from_checkpoint(opts.ckpt_path, map_location="cpu")
    seq_len = opts.seq_len or module.model.max_seq_len
    key_digits = readout or 5
    ids, needle = passkey_example(seq_len, readout=bool(readout), key_digits=key_digits, index=opts.index)
    weights = routing_by_position(module.model, ids)
    try:
        plot_routing(weights, needle, opts.out, readout=key_digits,
                     title=f"routing weight by position, {seq_len} bytes, needle at {needle[0]}")
    except ValueError as ex:  # e.g. a light-only or dense checkpoint: nothing is routed
        parser.error(str(ex))
    print(f"wrote {opts.out}")


COMMANDS = {"sample": sample, "plot": plot, "plot-routing": plot_routing_cmd}


def main(args: Optional[List[str]] = None) -> None:
    """Console entry point; returns None so that `sys.exit(main())` exits 0 on success.

    A run stopped by SIGTERM (a scheduler's preemption) exits 143 = 128 + SIGTERM, after its
    checkpoint is saved, so the scheduler does not record it as a success. Under SLURM with
    requeueing, Lightning requeues it instead.
    """
    # printed by Lightning 2.6 on every run, about its own use of torch's pytree API: nothing a user can act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in COMMANDS:
        COMMANDS[argv[0]](argv[1:])
        return
    try:
        cli(args)
    except SIGTERMException:
        print("colt5: stopped by SIGTERM; resume with the same command plus --ckpt_path last", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except Exception as ex:  # noqa: BLE001 - re-raised unless it is a lost peer
        lost = lost_peer(ex)
        if lost is None:
            raise
        print(f"colt5: error: {lost}", file=sys.stderr)
        sys.exit(1)


LOST_PEER = ("Timed out waiting", "Connection closed by peer", "Connection reset by peer", "NCCL communicator was aborted",
             "Watchdog caught collective operation timeout",
             "Application timeout caused pair closure")  # gloo, when the peer's socket times out first


def lost_peer(ex: BaseException) -> Optional[str]:
    """One line for a distributed job whose peer process died or hung (the collective timed out or
    its connection closed), or None for any other error."""
    text = str(ex)
    if not any(sign in text for sign in LOST_PEER):
        return None
    detail = next(line.strip() for line in reversed(text.splitlines()) if any(s in line for s in LOST_PEER))
    return (f"another process of this distributed job died or stopped answering ({detail[-160:]}). "
            "The job ends after the strategy's timeout (--trainer.strategy.init_args.timeout, 0:05:00 in the "
            "DDP and FSDP presets); resume with the same command plus --ckpt_path last")


if __name__ == "__main__":
    main()
