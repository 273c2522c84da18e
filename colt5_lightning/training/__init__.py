"""Training: LightningModules, the optimizer schedule and the callbacks (router metrics, checkpoints,
non-finite guard, length and budget curricula)."""
from .classification_module import ClassificationModule, ImageClassificationModule, SequenceClassificationModule
from .budget_curriculum import BudgetCurriculum
from .checkpoint import CheckpointDirError, LastCheckpoint
from .curriculum import LengthCurriculum
from .guards import NonFiniteError, NonFiniteGuard
from .diffusion_module import DiffusionModule
from .lm_module import LanguageModelModule
from .random_state import RandomStateCheckpoint
from .optim import configure_adamw, param_groups, warmup_cosine
from .router_monitor import RouterMonitor, routing_statistics
from .strategies import BlockFSDPStrategy

__all__ = ["BlockFSDPStrategy", "BudgetCurriculum", "CheckpointDirError", "ClassificationModule", "DiffusionModule",
           "ImageClassificationModule",
           "LanguageModelModule", "LastCheckpoint", "LengthCurriculum", "NonFiniteError", "NonFiniteGuard",
           "RandomStateCheckpoint", "RouterMonitor",
           "SequenceClassificationModule", "configure_adamw", "param_groups", "routing_statistics",
           "warmup_cosine"]
