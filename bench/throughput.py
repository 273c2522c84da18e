"""End-to-end training throughput: tokens/s of LanguageModelModule's own training step, routed vs
dense, in one process. Each step is what `colt5 fit` runs: a Trainer calls the module's
training_step (forward and loss), backward, and the optimizer and schedule of its
configure_optimizers, on random byte batches. Peak memory is reported on CUDA.

    python -m bench.throughput --contexts 2048 8192 --dim 128 --depth 2 --steps 3
"""
from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from colt5_lightning.models import RoutingConfig
from colt5_lightning.training import LanguageModelModule
from colt5_lightning.training.compile import COMPILE_MODES

from .common import machine, sync, write_json

PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}


class RandomBytes(Dataset):
    """`size` samples of `context` random bytes in LanguageModelModule's batch format."""

    def __init__(self, size: int, context: int):
        self.size, self.context = size, context

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        tokens = torch.randint(0, 256, (self.context + 1,), generator=torch.Generator().manual_seed(index))
        return {"input_ids": tokens[:-1], "targets": tokens[1:]}


class StepTimer(pl.Callback):
    """Seconds of each training step, from the batch's start to the end of its optimizer step."""

    def __init__(self, device: str):
        self.device, self.seconds, self.start = device, [], 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        sync(self.device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        sync(self.device)
        self.seconds.append(time.perf_counter() - self.start)


def lm_module(args, context: int, dense: bool) -> LanguageModelModule:
    k = max(1, context // args.k_ratio)
    routing = RoutingConfig(light_heads=args.heads, heavy_heads=args.heads, light_dim_head=args.dim_head,
                            heavy_dim_head=args.dim_head, light_window_size=args.window, num_heavy_attn_tokens_q=k,
                            num_heavy_attn_tokens_kv=k, num_heavy_ff_tokens=k, heavy_queries=args.heavy_queries,
                            kv_routed_by=args.kv_routed_by)
    return LanguageModelModule(vocab_size=256, seq_len=context, dim=args.dim, depth=args.depth, routing=routing,
                               dense=dense, sample_length=0, compile=args.compile)


def measure(args, context: int, dense: bool, precision: str) -> dict:
    """tokens/s (median step) and peak memory of `args.steps` timed steps after the warm-up."""
    torch.manual_seed(0)
    module = lm_module(args, context, dense)
    warmup = 1 if args.compile == "off" else 3
    timer = StepTimer(args.device)
    trainer = pl.Trainer(accelerator=args.device, devices=1, precision=precision, max_steps=warmup + args.steps,
                         limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    data = DataLoader(RandomBytes(warmup + args.steps, context), batch_size=args.batch)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, train_dataloaders=data)
    timed = sorted(timer.seconds[warmup:])
    seconds = timed[len(timed) // 2]
    peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else None
    return {"tokens_per_s": args.batch * context / seconds, "step_s": seconds, "peak_bytes": peak}


def compare(args, context: int, precision: str) -> dict:
    """Routed and dense measured in turn, `args.rounds` times: a machine whose speed drifts
    between runs moves both models of a round alike, so the ratio is the median of the rounds'
    ratios (each round's figures are kept)."""
    rounds = []
    for _ in range(args.rounds):
        routed = measure(args, context, False, precision)
        dense = measure(args, context, True, precision)
        rounds.append({"routed": routed, "dense": dense,
                       "routed_over_dense": routed["tokens_per_s"] / dense["tokens_per_s"]})
    return {"context": context,
            "routed": statistics.median(r["routed"]["tokens_per_s"] for r in rounds),
            "dense": statistics.median(r["dense"]["tokens_per_s"] for r in rounds),
            "routed_over_dense": statistics.median(r["routed_over_dense"] for r in rounds),
            "round_ratios": [r["routed_over_dense"] for r in rounds],
            "routed_peak_bytes": rounds[-1]["routed"]["peak_bytes"],
            "dense_peak_bytes": rounds[-1]["dense"]["peak_bytes"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="+", default=[8192, 32768])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim-head", type=int, default=64)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--k-ratio", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(PRECISIONS), default=None,
                        help="fp32 or bf16 (bf16-mixed, the GPU presets' precision); default bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--heavy-queries", choices=["routed", "all"], default="routed",
                        help="the routed model's RoutingConfig.heavy_queries (all: the passkey decoder's)")
    parser.add_argument("--kv-routed-by", choices=["hidden", "embedding"], default="hidden")
    parser.add_argument("--rounds", type=int, default=1,
                        help="routed and dense measured in turn this many times; the ratio is the rounds' median")
    parser.add_argument("--json", default=None)
    parser.add_argument("--compile", choices=COMPILE_MODES, default="off",
                        help="the LightningModule's compile option, for both models")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    dtype_name = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    rows = []
    with warnings.catch_warnings():
        for noise in (".*does not have many workers", ".*no `val_dataloader`", r".*isinstance\(treespec, LeafSpec\)"):
            warnings.filterwarnings("ignore", message=noise)
        for context in args.contexts:
            rows.append(compare(args, context, PRECISIONS[dtype_name]))
    payload = {"machine": machine(), "dtype": dtype_name, "config": vars(args), "rows": rows}
    print(f"# {payload['machine']['device']}, torch {payload['machine']['torch']}, {dtype_name}, "
          f"LanguageModelModule training steps through a Trainer")
    print(f"{'context':>8} {'routed tok/s':>13} {'dense tok/s':>12} {'routed/dense':>13} {'peak GiB r/d':>14}"
          f"  rounds' ratios")
    for r in rows:
        peak = ("-" if r["routed_peak_bytes"] is None
                else f"{r['routed_peak_bytes'] / 2**30:.2f}/{r['dense_peak_bytes'] / 2**30:.2f}")
        print(f"{r['context']:>8} {r['routed']:13.0f} {r['dense']:12.0f} {r['routed_over_dense']:13.2f} {peak:>14}"
              f"  {' '.join(f'{x:.2f}' for x in r['round_ratios'])}")
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
