"""PNG pictures of runs: metric curves side by side, and routing weight by position."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

from .metrics import Series


def _pyplot():
    try:
        import matplotlib
    except ImportError as ex:  # an optional extra
        raise ImportError("plots need matplotlib: pip install 'colt5-lightning[plot]'") from ex
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _smooth(points: Series, window: int) -> Series:
    if window <= 1 or len(points) <= window:
        return points
    out, total = [], 0.0
    values = [v for _, v in points]
    for i, (step, value) in enumerate(points):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append((step, total / min(i + 1, window)))
    return out


def plot_curves(runs: Dict[str, Dict[str, Series]], metrics: Iterable[str], out: str,
                smooth: int = 20, title: Optional[str] = None) -> List[str]:
    """One panel per metric, one line per run; train/* metrics are smoothed over `smooth` points.
    Returns the metrics drawn (those at least one run has); raises if none is."""
    drawn = [m for m in metrics if any(m in series for series in runs.values())]
    if not drawn:
        raise ValueError(f"none of the runs logged any of {list(metrics)}")
    plt = _pyplot()
    cols = min(3, len(drawn))
    rows = -(-len(drawn) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(drawn):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, drawn):
        for label, series in runs.items():
            points = series.get(metric)
            if not points:
                continue
            if metric.startswith("train/") and metric != "train/length":
                points = _smooth(points, smooth)
            ax.plot([s for s, _ in points], [v for _, v in points], label=label,
                    marker="o" if len(points) < 30 else None, markersize=3)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return drawn


def plot_routing(weights: Dict[str, Tensor], needle: Tuple[int, int], out: str,
                 readout: int = 0, title: Optional[str] = None) -> None:
    """A heat row per router: routing weight by position; the needle's span and the readout
    positions (the last `readout`) are marked."""
    if not weights:
        raise ValueError("no router saw the input: is this a light-only or dense model?")
    plt = _pyplot()
    names = list(weights)
    n = len(next(iter(weights.values())))
    bins = -(-n // 1024)  # wider inputs are max-pooled so that a single routed token stays visible
    rows = [torch.nn.functional.pad(weights[k], (0, -n % bins)).view(-1, bins).amax(-1) for k in names]
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(names) + 1.4))
    image = ax.imshow(torch.stack(rows).numpy(), aspect="auto", interpolation="nearest",
                      cmap="viridis", vmin=0, vmax=1, extent=(0, n, len(names), 0))
    ax.set_yticks([i + 0.5 for i in range(len(names))], [k.replace("router/", "") for k in names], fontsize=8)
    ax.axvspan(*needle, color="red", alpha=0.25, label="needle")
    if readout:
        ax.axvspan(n - readout, n, color="orange", alpha=0.4, label="readout")
    ax.set_xlabel("position")
    ax.legend(loc="upper left", fontsize=8)
    fig.colorbar(image, ax=ax, label="routing weight")
    ax.set_title(title or "routing weight by position")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
