"""Models built from routed blocks: an encoder stack, a causal LM and two classifiers."""
from .classifier import CoLT5SequenceClassifier
from .config import RoutingConfig
from .encoder import CoLT5Encoder
from .image import CoLT5ImageClassifier
from .language_model import CoLT5LanguageModel
from .vit import ConditionalRoutedViT

__all__ = ["CoLT5Encoder", "CoLT5ImageClassifier", "CoLT5LanguageModel", "CoLT5SequenceClassifier", "ConditionalRoutedViT", "RoutingConfig"]
