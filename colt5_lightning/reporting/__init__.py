"""Reading finished runs back: metric curves and routing-by-position pictures (needs matplotlib)."""
from .metrics import find_metrics, read_metrics
from .plots import plot_curves, plot_routing
from .routing_map import passkey_example, routing_by_position

__all__ = ["find_metrics", "passkey_example", "plot_curves", "plot_routing", "read_metrics", "routing_by_position"]
