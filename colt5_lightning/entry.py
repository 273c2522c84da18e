"""The `colt5` console command. `colt5` and `colt5 --help` answer from here without importing torch
or Lightning (seconds of start-up), and `colt5 fit --help` (validate, test, predict) from the help
cache once it has been built; every other call goes to colt5_lightning.cli."""
from __future__ import annotations

import sys
from typing import List, Optional

COMMANDS = (
    ("fit", "train: colt5 fit --config RECIPE.yaml [--config MORE.yaml] [--section.key value ...]"),
    ("validate", "evaluate a checkpoint on the validation set (--ckpt_path FILE, a run folder or last)"),
    ("test", "evaluate a checkpoint on the test set"),
    ("predict", "run a checkpoint on the prediction data"),
    ("sample", "text from a language-model checkpoint: colt5 sample --ckpt_path CKPT --prompt TEXT"),
    ("plot", "metric curves of runs side by side, as one PNG: colt5 plot RUN_DIR..."),
    ("plot-routing", "router weight by position on a held-out passkey example, as PNG: --ckpt_path CKPT"),
)

OWN_COMMANDS = ("sample", "plot", "plot-routing")  # the rest are LightningCLI's subcommands
LIGHTNING_COMMANDS = tuple(name for name, _ in COMMANDS if name not in OWN_COMMANDS)
HELP_FLAGS = ("-h", "--help")


def top_level_help() -> str:
    width = max(len(name) for name, _ in COMMANDS)
    lines = [f"usage: colt5 {{{','.join(name for name, _ in COMMANDS)}}} ...", "",
             "colt5: train and use CoLT5 conditionally routed transformers with PyTorch Lightning.", "",
             "commands (each answers --help):"]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS]
    lines += ["", "A first run: colt5 fit --config recipes/language_modeling/cpu.yaml",
              "Shared options of fit/validate/test/predict (-c/--config, --print_config): colt5 fit --help"]
    return "\n".join(lines)


def main(args: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    if not argv:  # a command is required
        print(top_level_help(), file=sys.stderr)
        sys.exit(2)
    if len(argv) == 1 and argv[0] in HELP_FLAGS:
        print(top_level_help())
        return
    if len(argv) == 2 and argv[1] in HELP_FLAGS and argv[0] in LIGHTNING_COMMANDS:
        from .help_cache import print_help

        print_help(argv, _run_cli)
        return
    _run_cli(argv)


def _run_cli(argv: List[str]) -> None:
    from .cli import main as cli_main

    cli_main(argv)


if __name__ == "__main__":
    main()
