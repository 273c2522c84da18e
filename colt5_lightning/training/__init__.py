"""Training: LightningModules, the optimizer schedule and the RouterMonitor callback."""
from .classification_module import ClassificationModule, ImageClassificationModule, SequenceClassificationModule
from .curriculum import LengthCurriculum
from .lm_module import LanguageModelModule
from .optim import configure_adamw, param_groups, warmup_cosine
from .router_monitor import RouterMonitor, routing_statistics
from .strategies import BlockFSDPStrategy

__all__ = ["BlockFSDPStrategy", "ClassificationModule", "ImageClassificationModule", "LanguageModelModule", "LengthCurriculum",
           "RouterMonitor",
           "SequenceClassificationModule", "configure_adamw", "param_groups", "routing_statistics",
           "warmup_cosine"]
