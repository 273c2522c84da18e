"""What every benchmark shares: the reference configuration, timers and the machine's name."""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext
from typing import Callable, Optional

import torch

# The reference block: dim 512, 8×64 heads per branch, window 128, FF ×0.5 / ×4.
BLOCK = dict(dim=512, light_dim_head=64, light_heads=8, light_window_size=128, heavy_dim_head=64,
             heavy_heads=8, light_ff_mult=0.5, heavy_ff_mult=4)


def routed_block_kwargs(k: int) -> dict:
    return dict(BLOCK, num_heavy_ff_tokens=k, num_heavy_attn_tokens_q=k, num_heavy_attn_tokens_kv=k)


def dense_block_kwargs() -> dict:
    return dict(dim=BLOCK["dim"], heads=BLOCK["heavy_heads"], dim_head=BLOCK["heavy_dim_head"],
                ff_mult=BLOCK["heavy_ff_mult"])


def machine() -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.date.today().isoformat(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
    else:
        info["device"] = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
            info["device"] = names[0] if names else info["device"]
        except OSError:
            pass
    return info


def autocast(device: str, dtype: Optional[torch.dtype]):
    return torch.autocast(device_type=device, dtype=dtype) if dtype is not None else nullcontext()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], None], *, device: str, warmup: int, repeats: int) -> float:
    """Median seconds of fn over `repeats` runs after `warmup` runs (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def training_step_seconds(model: torch.nn.Module, loss: Callable[[], torch.Tensor], *, device: str, warmup: int,
                          repeats: int) -> float:
    """Median seconds of one training step of `model`: `loss()` (the forward pass), backward and an
    AdamW update. Compiling, if `loss` runs a compiled model, happens in the warm-up steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return median_time(step, device=device, warmup=warmup, repeats=repeats)


def peak_memory(fn: Callable[[], None], device: str) -> Optional[int]:
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def write_json(path: Optional[str], payload: dict) -> None:
    """Writes atomically: a reader never sees half a file."""
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)
