"""Metric series out of a run's CSVLogger files."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Tuple

Series = List[Tuple[int, float]]


def find_metrics(run: str) -> Path:
    """run is a metrics.csv, a CSVLogger version folder, or a folder above one (the newest
    metrics.csv under it is taken)."""
    path = Path(run)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"run {run!r} is neither a metrics.csv nor a folder")
    found = sorted(path.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no metrics.csv under {run!r}: was the run logged with a CSVLogger?")
    return found[-1]


def read_metrics(run: str) -> Dict[str, Series]:
    """{metric name: [(step, value), ...]} for every column of the run's metrics.csv."""
    series: Dict[str, Series] = {}
    with open(find_metrics(run), newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                # NaN is kept: a diverged run must show as one
                series.setdefault(key, []).append((step, float(value)))
    return series
