"""Where one routed block's forward + backward spends its time on this machine: matrix
products, SDPA and zero-fills, as shares of the torch.profiler total.

    python -m bench.profile_block --tokens 4096 --threads 2
"""
from __future__ import annotations

import argparse

import torch

from colt5_lightning import ConditionalRoutedTransformerBlock

from .common import routed_block_kwargs

GEMM = ("aten::mm", "aten::addmm", "aten::bmm")


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--k-ratio", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    block = ConditionalRoutedTransformerBlock(**routed_block_kwargs(max(1, args.tokens // args.k_ratio)))
    x = torch.randn(1, args.tokens, 512, requires_grad=True)
    for _ in range(2):
        block(x).sum().backward()
    rows = []
    for _ in range(args.runs):
        with torch.profiler.profile() as prof:
            block(x).sum().backward()
        self_ms = {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}
        total = sum(self_ms.values())
        row = {"total_ms": total,
               "gemm_ms": sum(v for key, v in self_ms.items() if key in GEMM),
               "sdpa_ms": sum(v for key, v in self_ms.items() if "scaled_dot_product" in key),
               "fill_ms": self_ms.get("aten::fill_", 0.0)}
        rows.append(row)
        print("  ".join(f"{name[:-3]} {value:.0f} ms" + ("" if name == "total_ms" else f" ({value / total:.0%})")
                        for name, value in row.items()))
    return rows


if __name__ == "__main__":
    main()
