"""Models built from routed blocks: an encoder stack, a causal LM, two classifiers and an image denoiser."""
from .classifier import CoLT5SequenceClassifier
from .config import RoutingConfig
from .denoiser import CoLT5ImageDenoiser
from .encoder import CoLT5Encoder
from .image import CoLT5ImageClassifier
from .language_model import CoLT5LanguageModel
from .vit import ConditionalRoutedViT

__all__ = ["CoLT5Encoder", "CoLT5ImageClassifier", "CoLT5ImageDenoiser", "CoLT5LanguageModel", "CoLT5SequenceClassifier", "ConditionalRoutedViT", "RoutingConfig"]
