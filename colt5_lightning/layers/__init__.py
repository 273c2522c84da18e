"""Routed layers: light and heavy branches combined by the routers."""
from .attention import ConditionalRoutedAttention
from .autoregressive import ConditionalRoutedAutoregressiveAttention
from .block import ConditionalRoutedTransformerBlock
from .cross_attention import ConditionalRoutedCrossAttention
from .dense import DenseTransformerBlock
from .feedforward import ConditionalRoutedFeedForward
from .image_attention import ConditionalRoutedImageAttention

__all__ = ["ConditionalRoutedAttention", "ConditionalRoutedAutoregressiveAttention",
           "ConditionalRoutedCrossAttention", "ConditionalRoutedFeedForward",
           "ConditionalRoutedImageAttention", "ConditionalRoutedTransformerBlock", "DenseTransformerBlock"]
