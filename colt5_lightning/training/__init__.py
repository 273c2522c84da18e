"""Training: LightningModules, the optimizer schedule and the RouterMonitor callback."""
from .classification_module import ClassificationModule, ImageClassificationModule, SequenceClassificationModule
from .lm_module import LanguageModelModule
from .optim import configure_adamw, param_groups, warmup_cosine
from .router_monitor import RouterMonitor, routing_statistics

__all__ = ["ClassificationModule", "ImageClassificationModule", "LanguageModelModule", "RouterMonitor",
           "SequenceClassificationModule", "configure_adamw", "param_groups", "routing_statistics",
           "warmup_cosine"]
