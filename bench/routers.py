"""Training speed per router type: the passkey encoder recipe's model (a bidirectional routed
classifier reading 5 digits at the end), one optimizer step = forward + backward + AdamW on a
random byte batch, every router type in one process, as a ratio to coor_descent.

    python -m bench.routers --length 4096 --batch 8
"""
from __future__ import annotations

import argparse

import torch

from colt5_lightning.models import CoLT5SequenceClassifier, RoutingConfig
from colt5_lightning.routing import ROUTER_TYPES

from .common import machine, training_step_seconds, write_json

BASELINE = "coor_descent"


def steps_per_second(args, router_type: str) -> float:
    torch.manual_seed(0)
    routing = RoutingConfig(light_heads=args.heads, heavy_heads=args.heads, light_dim_head=args.dim_head,
                            heavy_dim_head=args.dim_head, light_window_size=args.window,
                            light_position="relative", num_heavy_attn_tokens_q=args.k, num_heavy_attn_tokens_kv=args.k,
                            num_heavy_ff_tokens=args.k, router_type=router_type)
    model = CoLT5SequenceClassifier(256, 10, args.length, args.dim, args.depth, routing=routing,
                                    num_readout=5, positions="end").train()
    inputs = torch.randint(0, 256, (args.batch, args.length))
    labels = torch.randint(0, 10, (args.batch, 5))

    def loss():
        return torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), labels.flatten())

    return 1.0 / training_step_seconds(model, loss, device="cpu", warmup=1, repeats=args.steps)

def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim-head", type=int, default=32)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--k", type=int, default=128, help="tokens per router")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--router-types", nargs="+", choices=ROUTER_TYPES, default=list(ROUTER_TYPES))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = [{"router_type": name, "steps_per_s": steps_per_second(args, name)} for name in args.router_types]
    base = next((r["steps_per_s"] for r in rows if r["router_type"] == BASELINE), None)
    for row in rows:
        row[f"over_{BASELINE}"] = None if base is None else row["steps_per_s"] / base
    payload = {"machine": machine(), "config": vars(args), "rows": rows}
    print(f"# {payload['machine']['device']}, torch {payload['machine']['torch']}, fp32, "
          f"{payload['machine']['threads']} thread(s); length {args.length}, batch {args.batch}")
    print(f"{'router_type':>14} {'steps/s':>9} {'vs ' + BASELINE:>16}")
    for r in rows:
        ratio = "" if r[f"over_{BASELINE}"] is None else f"{r[f'over_{BASELINE}']:.2f}"
        print(f"{r['router_type']:>14} {r['steps_per_s']:9.3f} {ratio:>16}")
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
