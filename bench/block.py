"""Times one block, forward and forward+backward: the routed block per router type, the dense
SDPA block and, when installed, colt5-attention (pip install -e '.[bench]').

    python -m bench.block --sizes 4096 16384 --k-ratio 32 --json bench-cpu.json
"""
from __future__ import annotations

import argparse
import math
from typing import Callable, Optional

import torch

from colt5_lightning import ConditionalRoutedTransformerBlock
from colt5_lightning.layers import DenseTransformerBlock

from .common import (autocast, dense_block_kwargs, machine, median_time, peak_memory, routed_block_kwargs,
                     write_json)

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def reference_block(k: int):
    """colt5-attention's block with the same configuration, or None when it is not installed."""
    try:
        import colt5_attention
    except ImportError:
        return None
    kwargs = routed_block_kwargs(k)
    return colt5_attention.ConditionalRoutedTransformerBlock(**kwargs)


def build(name: str, k: int) -> Optional[torch.nn.Module]:
    if name == "dense":
        return DenseTransformerBlock(**dense_block_kwargs())
    if name == "reference":
        return reference_block(k)
    return ConditionalRoutedTransformerBlock(**routed_block_kwargs(k), router_type=name)


def measure(block: torch.nn.Module, *, batch: int, n: int, device: str, dtype, warmup: int, repeats: int,
            compile_block=False) -> dict:
    """compile_block: False, True (default torch.compile) or a torch.compile mode name."""
    block = block.to(device).train()
    run_block: Callable = block
    if compile_block:
        torch._dynamo.reset()  # each configuration gets its own compile, not a recompile-limited cache
        run_block = torch.compile(block, mode=None if compile_block is True else compile_block)
    x = torch.randn(batch, n, block_dim(block), device=device)
    x_grad = x.clone().requires_grad_()

    def forward():
        with torch.no_grad(), autocast(device, dtype):
            run_block(x)

    def forward_backward():
        with autocast(device, dtype):
            out = run_block(x_grad)
        out.float().sum().backward()

    result = {"fwd_s": median_time(forward, device=device, warmup=warmup, repeats=repeats),
              "fwd_bwd_s": median_time(forward_backward, device=device, warmup=warmup, repeats=repeats),
              "peak_bytes": peak_memory(forward_backward, device)}
    result["tokens_per_s"] = batch * n / result["fwd_bwd_s"]
    return result


def block_dim(block: torch.nn.Module) -> int:
    return next(p for p in block.parameters() if p.ndim == 1).shape[0]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--k", type=int, default=None, help="routed tokens (default: n / k-ratio)")
    parser.add_argument("--k-ratio", type=int, default=32)
    parser.add_argument("--blocks", nargs="+", default=["dense", "coor_descent", "sinkhorn", "cum_softmax", "reference"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="autocast dtype (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile each block")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype_name = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    rows = []
    for n in args.sizes:
        k = args.k or max(1, n // args.k_ratio)
        for name in args.blocks:
            torch.manual_seed(0)
            block = build(name, k)
            if block is None:
                continue
            try:
                row = measure(block, batch=args.batch, n=n, device=args.device, dtype=DTYPES[dtype_name],
                              warmup=args.warmup, repeats=args.repeats, compile_block=args.compile)
            except Exception as error:  # the reference crashes under bf16: record it, go on
                row = {"error": f"{type(error).__name__}: {str(error)[:120]}"}
            rows.append(dict(block=name, n=n, k=k, batch=args.batch, **row))
    add_ratios(rows)
    payload = {"machine": machine(), "dtype": dtype_name, "compiled": args.compile, "rows": rows}
    print_table(payload)
    write_json(args.json, payload)
    return payload


def add_ratios(rows: list) -> None:
    by_key = {(r["block"], r["n"]): r for r in rows}
    for row in rows:
        for base in ("dense", "reference"):
            other = by_key.get((base, row["n"]))
            if other and "fwd_bwd_s" in other and "fwd_bwd_s" in row:
                row[f"speedup_vs_{base}"] = other["fwd_bwd_s"] / row["fwd_bwd_s"]


def print_table(payload: dict) -> None:
    m = payload["machine"]
    print(f"# {m['device']}, torch {m['torch']}, {payload['dtype']}, {m['threads']} threads, {m['date']}")
    print(f"{'block':>13} {'n':>7} {'k':>5} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak MiB':>9} "
          f"{'tok/s':>10} {'x dense':>8} {'x ref':>6}")
    for r in payload["rows"]:
        if "error" in r:
            print(f"{r['block']:>13} {r['n']:>7} {r['k']:>5}  {r['error']}")
            continue
        peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f}"
        print(f"{r['block']:>13} {r['n']:>7} {r['k']:>5} {r['fwd_s'] * 1e3:9.2f} {r['fwd_bwd_s'] * 1e3:11.2f} "
              f"{peak:>9} {r['tokens_per_s']:10.0f} {fmt(r.get('speedup_vs_dense'))} "
              f"{fmt(r.get('speedup_vs_reference'), 6)}")


def fmt(value, width: int = 8) -> str:
    return f"{value:{width}.2f}" if value is not None and math.isfinite(value) else f"{'-':>{width}}"


if __name__ == "__main__":
    main()
