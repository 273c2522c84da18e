"""What a run started from a checkpoint may change: the model settings it asks for against the
hyper-parameters the checkpoint was trained with.

A checkpoint holds weights for one model. Loading them into a model built with another router,
window or width either fails on a shape deep inside Lightning or, worse, runs: the same weights
read by another routing. So a setting that defines the model must equal the checkpoint's; the
settings a LightningModule lists in `settings_a_resume_may_change` (its optimiser, compile,
samples, diagnostics) may differ and are reported.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Iterable, Mapping, Tuple

# keys Lightning's CLI adds to the saved hyper-parameters
_BOOKKEEPING = ("_class_path", "_instantiator")


def flatten(settings: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{"routing": {"router_type": "x"}} -> {"routing.router_type": "x"}; tuples become lists."""
    flat = {}
    for key, value in settings.items():
        if hasattr(value, "as_dict"):  # a jsonargparse Namespace
            value = value.as_dict()
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def setting_differences(saved: Mapping[str, Any], requested: Mapping[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """{dotted key: (saved value, requested value)} for the settings both name with unequal values."""
    saved = flatten({k: v for k, v in saved.items() if k not in _BOOKKEEPING})
    requested = flatten(requested)
    return {key: (saved[key], requested[key]) for key in sorted(saved.keys() & requested.keys())
            if saved[key] != requested[key]}


def with_defaults_of_newer_settings(saved: Mapping[str, Any], module_class: type) -> Dict[str, Any]:
    """saved plus, for each plain-valued argument of module_class that the checkpoint does not name
    (a setting added after it was written), that argument's default: the model the checkpoint
    holds had the behaviour the default keeps, so asking for another value is a change."""
    plain = (str, int, float, bool, type(None))
    defaults = {name: p.default for name, p in inspect.signature(module_class.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty and isinstance(p.default, plain)}
    return {**{k: v for k, v in defaults.items() if k not in saved}, **saved}


def may_change(key: str, allowed: Iterable[str]) -> bool:
    """True when `key` or a group above it ("optim" for "optim.lr") is in `allowed`."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in allowed for i in range(1, len(parts) + 1))


def split_changes(differences: Mapping[str, Tuple[Any, Any]], allowed: Iterable[str]) -> Tuple[dict, dict]:
    """(refused, accepted) differences."""
    allowed = set(allowed)
    refused = {k: v for k, v in differences.items() if not may_change(k, allowed)}
    accepted = {k: v for k, v in differences.items() if may_change(k, allowed)}
    return refused, accepted


def describe(differences: Mapping[str, Tuple[Any, Any]]) -> str:
    return "; ".join(f"{key}: {saved!r} in the checkpoint, {requested!r} now"
                     for key, (saved, requested) in differences.items())
