"""End-to-end training throughput: tokens/s of the language-model recipe's model, routed vs
dense, one optimizer step = forward + backward + AdamW on a random byte batch.

    python -m bench.throughput --contexts 2048 8192 --dim 128 --depth 2 --steps 3
"""
from __future__ import annotations

import argparse

import torch

from colt5_lightning.models import CoLT5LanguageModel, RoutingConfig
from colt5_lightning.training.compile import COMPILE_MODES, compiled

from .common import autocast, machine, training_step_seconds, write_json

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def model_kwargs(args, context: int, dense: bool) -> dict:
    k = max(1, context // args.k_ratio)
    routing = RoutingConfig(light_heads=args.heads, heavy_heads=args.heads, light_dim_head=args.dim_head,
                            heavy_dim_head=args.dim_head, light_window_size=args.window, num_heavy_attn_tokens_q=k,
                            num_heavy_attn_tokens_kv=k, num_heavy_ff_tokens=k)
    return dict(vocab_size=256, max_seq_len=context, dim=args.dim, depth=args.depth, routing=routing, dense=dense)


def tokens_per_second(args, context: int, dense: bool, device: str, dtype) -> float:
    torch.manual_seed(0)
    model = CoLT5LanguageModel(**model_kwargs(args, context, dense)).to(device).train()
    forward = model if args.compile == "off" else compiled(model, args.compile)
    batch = torch.randint(0, 256, (args.batch, context + 1), device=device)

    def loss():
        with autocast(device, dtype):
            logits = forward(batch[:, :-1])
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())

    seconds = training_step_seconds(model, loss, device=device, warmup=1 if args.compile == "off" else 3,
                                    repeats=args.steps)
    return args.batch * context / seconds


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
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--compile", choices=COMPILE_MODES, default="off",
                        help="torch.compile both models (as the LightningModules' compile option does)")
    args = parser.parse_args(argv)
    dtype_name = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    rows = []
    for context in args.contexts:
        row = {"context": context}
        for dense in (False, True):
            row["dense" if dense else "routed"] = tokens_per_second(args, context, dense, args.device,
                                                                    DTYPES[dtype_name])
        row["routed_over_dense"] = row["routed"] / row["dense"]
        rows.append(row)
    payload = {"machine": machine(), "dtype": dtype_name, "config": vars(args), "rows": rows}
    print(f"# {payload['machine']['device']}, torch {payload['machine']['torch']}, {dtype_name}")
    print(f"{'context':>8} {'routed tok/s':>13} {'dense tok/s':>12} {'routed/dense':>13}")
    for r in rows:
        print(f"{r['context']:>8} {r['routed']:13.0f} {r['dense']:12.0f} {r['routed_over_dense']:13.2f}")
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
