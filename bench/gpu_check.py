"""The one GPU script: checks the fast paths against the eager path, then times everything.

GPU time is scarce, so this runs once per change, within a wall-clock budget: each section
checks the clock first and is skipped (and says so) when the budget is spent. Results go to
--out as JSON after every measurement, so a run cut short still leaves what it measured.

    python -m bench.gpu_check --out gpu_check.json --budget-s 480
"""
from __future__ import annotations

import argparse
import time
import traceback

import torch

from colt5_lightning import ConditionalRoutedTransformerBlock
from colt5_lightning.layers import DenseTransformerBlock
from colt5_lightning.routing import coor_descent

from .common import dense_block_kwargs, machine, routed_block_kwargs, write_json
from .block import measure

ROUTER = dict(n_iters=20, eps=0.03, eps_init=4.0, eps_decay=0.7)
DEVICE = "cuda"
SCALE = 1  # --smoke divides every size by 64 and runs on the CPU, to check the script itself


def size(n: int) -> int:
    return max(256, n // SCALE)


class Run:
    def __init__(self, out: str, budget_s: float):
        self.out, self.budget_s, self.start = out, budget_s, time.time()
        self.payload = {"machine": machine(), "checks": {}, "timings": [], "skipped": [], "errors": []}

    def left(self) -> float:
        return self.budget_s - (time.time() - self.start)

    def section(self, name: str, fn, need_s: float = 30.0):
        if self.left() < need_s:
            self.payload["skipped"].append(name)
            print(f"[skip] {name}: {self.left():.0f} s left", flush=True)
            return
        t0 = time.time()
        try:
            fn()
        except Exception as error:
            self.payload["errors"].append({"section": name, "error": repr(error)[:300],
                                           "trace": traceback.format_exc()[-1500:]})
            print(f"[error] {name}: {error!r}"[:300], flush=True)
        print(f"[done] {name} in {time.time() - t0:.1f} s", flush=True)
        write_json(self.out, self.payload)

    def time_block(self, label: str, block, *, n: int, batch: int = 1, compile_block=False, repeats=10, **extra):
        row = dict(label=label, n=n, batch=batch, compiled=bool(compile_block), **extra)
        try:
            row.update(measure(block, batch=batch, n=n, device=DEVICE, dtype=torch.bfloat16, warmup=3,
                               repeats=repeats, compile_block=compile_block))
        except Exception as error:
            row["error"] = repr(error)[:200]
        torch.cuda.empty_cache()
        self.payload["timings"].append(row)
        ms = f"{row['fwd_bwd_s'] * 1e3:.2f} ms fwd+bwd, {row['fwd_s'] * 1e3:.2f} fwd, " \
             f"{(row['peak_bytes'] or 0) / 2**30:.2f} GiB" if "fwd_bwd_s" in row else row["error"]
        print(f"  {label:<34} n={n:<7} b={batch:<3} {ms}", flush=True)
        write_json(self.out, self.payload)
        return row


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def check_fused_router(run: Run):
    s = torch.randn(6, size(32768), device=DEVICE) * 2
    mask = torch.rand_like(s) > 0.1
    g = torch.randn_like(s)
    for method in ("exact", "iterative"):
        results = {}
        for fused in (False, True):
            x = s.clone().requires_grad_()
            w = coor_descent(x, k=size(1024), mask=mask, fused=fused, method=method, **ROUTER)
            (w * g).sum().backward()
            results[fused] = (w.detach(), x.grad)
        (we, ge), (wf, gf) = results[False], results[True]
        check = run.payload["checks"][f"coor_descent_{method}_fused_vs_eager"] = {
            "max_abs_weight_diff": (we - wf).abs().max().item(), "grad_rel_err": rel_err(gf, ge),
            "sum_residual": ((wf.sum(-1) - size(1024)).abs() / size(1024)).max().item(),
            "masked_weight_max": wf[~mask].abs().max().item()}
        print(f"   {method}: {check}", flush=True)


def check_compiled_block(run: Run):
    torch.manual_seed(0)
    block = ConditionalRoutedTransformerBlock(**routed_block_kwargs(size(1024))).to(DEVICE)
    x = torch.randn(1, size(32768), 512, device=DEVICE)
    grads = {}
    for name, fn in (("eager", block), ("compiled", torch.compile(block))):
        xx = x.clone().requires_grad_()
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            out = fn(xx)
        out.float().square().mean().backward()
        grads[name] = (out.detach(), xx.grad)
    run.payload["checks"]["block_compiled_vs_eager_bf16"] = {
        "out_rel_err": rel_err(grads["compiled"][0], grads["eager"][0]),
        "grad_rel_err": rel_err(grads["compiled"][1], grads["eager"][1]),
        "finite": bool(torch.isfinite(grads["compiled"][1]).all())}
    print("  ", run.payload["checks"]["block_compiled_vs_eager_bf16"], flush=True)


def check_fp16(run: Run):
    block = ConditionalRoutedTransformerBlock(**routed_block_kwargs(size(256))).to(DEVICE)
    x = torch.randn(2, size(4096), 512, device=DEVICE, requires_grad=True)
    with torch.autocast(DEVICE, dtype=torch.float16):
        out = block(x)
    out.float().mean().backward()
    run.payload["checks"]["fp16_autocast_finite_grads"] = all(
        p.grad is None or bool(torch.isfinite(p.grad).all()) for p in block.parameters())


def router_memory_vs_iters(run: Run):
    if DEVICE != "cuda":
        return
    peaks = {}
    for iters in (5, 50):
        s = torch.randn(3, size(131072), device=DEVICE, requires_grad=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        w = coor_descent(s, k=size(1024), n_iters=iters, eps=0.03, eps_init=4.0, eps_decay=0.7, fused=False)
        w.sum().backward()
        torch.cuda.synchronize()
        peaks[iters] = torch.cuda.max_memory_allocated() - base
    run.payload["checks"]["coor_descent_peak_bytes_by_iters"] = peaks
    print("  ", peaks, flush=True)


def router_share(run: Run):
    """Three routers' coordinate descent (fwd+bwd) against the compiled block at 32k."""
    from .common import median_time
    s = torch.randn(3, size(32768), device=DEVICE, requires_grad=True)
    for method in ("exact", "iterative"):
        for fused in (False, True):
            def step():
                coor_descent(s, k=size(1024), fused=fused, method=method, **ROUTER).sum().backward()
            t = median_time(step, device=DEVICE, warmup=3, repeats=20)
            label = f"3 routers coor_descent {method} {'fused' if fused else 'eager'}"
            run.payload["timings"].append({"label": label, "n": size(32768), "fwd_bwd_s": t})
            print(f"  {label}: {t * 1e3:.3f} ms", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--budget-s", type=float, default=480)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script")
    args = parser.parse_args(argv)
    global DEVICE, SCALE
    if args.smoke:
        DEVICE, SCALE = "cpu", 64
    run = Run(args.out, args.budget_s)
    print(run.payload["machine"], flush=True)

    def routed(k: int, **kwargs):
        torch.manual_seed(0)
        return ConditionalRoutedTransformerBlock(**routed_block_kwargs(k), **kwargs)

    def dense():
        return DenseTransformerBlock(**dense_block_kwargs())

    def sweep(label, make, sizes, **kwargs):
        for n in map(size, sizes):
            run.time_block(label, make(), n=n, repeats=5 if n > 65536 else 10, **kwargs)

    def fixed_tokens(shapes, with_dense=True):
        for n, batch in shapes:
            n = size(n)
            if with_dense:
                run.time_block("dense SDPA block", dense(), n=n, batch=batch)
            run.time_block("colt5 coor_descent compiled", routed(n // 16), n=n, batch=batch,
                           compile_block=True, k=n // 16)

    # sections in order of what the targets need most; each is skipped when time runs out
    run.section("check fused coordinate descent", lambda: check_fused_router(run))
    run.section("check fp16 autocast", lambda: check_fp16(run))
    run.section("router memory vs iterations", lambda: router_memory_vs_iters(run))
    run.section("dense block 8k/32k/128k", lambda: sweep("dense SDPA block", dense, [8192, 32768, 131072]))
    run.section("dense block at 65,536 tokens per batch", lambda: [
        run.time_block("dense SDPA block", dense(), n=size(n), batch=b)
        for n, b in ((4096, 16), (8192, 8), (16384, 4), (32768, 2))])
    run.section("routed block compiled 32k/128k", lambda: sweep(
        "colt5 coor_descent compiled", lambda: routed(size(1024)), [32768, 131072], k=size(1024),
        compile_block=True), need_s=90)
    run.section("65,536 tokens per batch: 32k x 2, 4k x 16",
                lambda: fixed_tokens([(32768, 2), (4096, 16)], with_dense=False), need_s=90)
    run.section("routed block compiled 128k, light_checkpoint", lambda: sweep(
        "colt5 coor_descent compiled light_checkpoint", lambda: routed(size(1024), light_checkpoint=True),
        [131072], k=size(1024), compile_block=True), need_s=60)
    run.section("router share", lambda: router_share(run))
    run.section("check compiled block 32k", lambda: check_compiled_block(run), need_s=60)
    run.section("65,536 tokens per batch: 16k x 4, 8k x 8",
                lambda: fixed_tokens([(16384, 4), (8192, 8)], with_dense=False), need_s=90)
    run.section("routed block eager 8k/32k/128k",
                lambda: sweep("colt5 coor_descent eager", lambda: routed(size(1024)), [8192, 32768, 131072],
                              k=size(1024)))

    def other_routers():
        for router_type in ("sinkhorn", "cum_softmax"):
            run.time_block(f"colt5 {router_type} eager", routed(size(1024), router_type=router_type),
                           n=size(32768), k=size(1024))
    run.section("sinkhorn / cum_softmax eager 32k", other_routers)

    def lm_throughput():
        from .throughput import main as throughput
        result = throughput(["--contexts", str(size(8192)), str(size(32768)), "--depth", "4", "--steps", "3",
                             "--device", DEVICE, "--dtype", "bf16"])
        run.payload["lm_throughput"] = result["rows"]
    run.section("LM training throughput 8k/32k (eager)", lm_throughput, need_s=30)

    write_json(args.out, run.payload)
    print("\n# summary (bf16 autocast, fwd+bwd)")
    for row in run.payload["timings"]:
        if "fwd_bwd_s" in row:
            print(f"{row['label']:<44} n={row['n']:<7} b={row.get('batch', '-')!s:<3} "
                  f"{row['fwd_bwd_s'] * 1e3:8.2f} ms  peak {row.get('peak_bytes') or 0:>12}")
    print("checks:", run.payload["checks"])
    print("skipped:", run.payload["skipped"], "errors:", [e["section"] for e in run.payload["errors"]])


if __name__ == "__main__":
    main()
