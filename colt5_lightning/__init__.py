"""colt5_lightning: CoLT5 conditionally routed transformers, and a Lightning kit to train them.

The public names are imported on first use (PEP 562), so that `colt5 --help` answers without
loading torch."""
from importlib import import_module

__version__ = "0.1.0"

_WHERE = {
    "ConditionalRoutedAttention": ".layers",
    "ConditionalRoutedAutoregressiveAttention": ".layers",
    "ConditionalRoutedCrossAttention": ".layers",
    "ConditionalRoutedFeedForward": ".layers",
    "ConditionalRoutedImageAttention": ".layers",
    "ConditionalRoutedTransformerBlock": ".layers",
    "ConditionalRoutedViT": ".models",
    "CoordinateDescentRouter": ".routing",
    "Router": ".routing",
    "coor_descent": ".routing",
    "topk": ".routing",
}

__all__ = list(_WHERE)

SUBPACKAGES = ("data", "layers", "models", "reporting", "routing", "training")


def __getattr__(name: str):
    if name in SUBPACKAGES:  # colt5_lightning.models.X after a bare `import colt5_lightning`
        return import_module(f".{name}", __name__)
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
