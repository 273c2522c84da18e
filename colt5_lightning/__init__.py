"""colt5_lightning: CoLT5 conditionally routed transformers, and a Lightning kit to train them."""
from .layers import (
    ConditionalRoutedAttention,
    ConditionalRoutedAutoregressiveAttention,
    ConditionalRoutedCrossAttention,
    ConditionalRoutedFeedForward,
    ConditionalRoutedImageAttention,
    ConditionalRoutedTransformerBlock,
)
from .models import ConditionalRoutedViT
from .routing import CoordinateDescentRouter, Router, coor_descent, topk

__version__ = "0.1.0"

__all__ = ["ConditionalRoutedAttention", "ConditionalRoutedAutoregressiveAttention",
           "ConditionalRoutedCrossAttention", "ConditionalRoutedFeedForward",
           "ConditionalRoutedImageAttention", "ConditionalRoutedTransformerBlock", "ConditionalRoutedViT", "CoordinateDescentRouter", "Router", "coor_descent", "topk"]
