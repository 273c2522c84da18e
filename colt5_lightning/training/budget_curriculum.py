"""BudgetCurriculum: train with many routed tokens first, the configured few once the task is learned.

A router gets a gradient only through the tokens it routes, and routing one token helps only when
the tokens it must meet are routed too (both marks of a pair, a key and its reader). With a small
budget a fresh router rarely routes both, so neither it nor the heavy branch learns. With every
token routed the heavy branch learns the task; lowering the budget step by step then rewards a
router for keeping the tokens that matter. It is what LengthCurriculum does for inputs whose
length can grow; this one keeps the data as it is and changes the routers' budget instead.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from .curriculum import StageGate

# the routed modules' per-call budgets: attention (queries, key/values) and feed-forward. The
# cross-attention's (num_tokens_q / num_tokens_kv) are not among them: no model here uses it.
BUDGET_ATTRIBUTES = ("num_heavy_tokens_q", "num_heavy_tokens_kv", "num_heavy_tokens")
CONFIGURED = "_configured_budgets"  # set on a module the first time a curriculum changes its budgets


def routed_budgets(model: nn.Module) -> Dict[Tuple[str, str], int]:
    """(module path, attribute) -> the configured number of routed tokens, for every module with a
    heavy branch (a light-only ablation's modules have none to change). Once a curriculum has
    changed a module's budget, its configured one is read from where the curriculum kept it."""
    budgets = {}
    for name, module in model.named_modules():
        if not getattr(module, "has_heavy", True):
            continue
        configured = getattr(module, CONFIGURED, {})
        for attr in BUDGET_ATTRIBUTES:
            if isinstance(getattr(module, attr, None), int):
                budgets[(name, attr)] = configured.get(attr, getattr(module, attr))
    return budgets


class BudgetCurriculum(pl.Callback):
    """Trains every routed module at `factors[stage]` times its configured budget (queries,
    key/values and feed-forward tokens alike), moving to the next factor once the mean of `metric`
    over the last `window` training steps reaches `threshold`. Factors descend to 1, the
    configured budget. Validation always runs at the configured budget, so val metrics say what the
    model does as it will be used. Logs train/budget_factor every step; the stage is saved in
    checkpoints, so a resumed run continues at the same budget. A model without routed modules
    (a dense control) trains unchanged."""

    def __init__(self, factors: Sequence[int] = (16, 8, 4, 2, 1), metric: str = "train/acc",
                 threshold: float = 0.9, window: int = 50):
        super().__init__()
        factors = list(factors)
        if (not factors or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in factors)
                or sorted(factors, reverse=True) != factors or factors[-1] != 1):
            raise ValueError(f"factors must be descending positive ints ending at 1 (the configured budget), "
                             f"got {factors}")
        self.factors = factors
        self.gate = StageGate(metric, threshold, window)
        self.stage = 0
        self._modules: List[nn.Module] = []  # the routed modules, each holding its configured budgets

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        modules = dict(pl_module.named_modules())
        for (name, attr), k in routed_budgets(pl_module).items():  # kept, so that a later fit knows them too
            modules[name].__dict__.setdefault(CONFIGURED, {})[attr] = k
        self._modules = [m for m in modules.values() if CONFIGURED in m.__dict__]
        if not self._modules:  # e.g. the dense control of a routed recipe: it trains as it is
            rank_zero_info(f"BudgetCurriculum: {type(pl_module).__name__} has no routed module; nothing to change")

    def _apply(self, factor: int) -> None:
        for module in self._modules:
            for attr, k in module.__dict__[CONFIGURED].items():
                setattr(module, attr, k * factor)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._apply(self.factors[self.stage])

    def on_validation_start(self, trainer, pl_module) -> None:
        self._apply(1)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._apply(1)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._apply(1)  # a failed fit leaves the model as configured, too

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.log("train/budget_factor", float(self.factors[self.stage]), on_step=True, on_epoch=False)
        if self.gate.passed(trainer) and self.stage + 1 < len(self.factors):
            self.stage += 1

    def state_dict(self) -> dict:
        return {"stage": self.stage, "recent": self.gate.state()}

    def load_state_dict(self, state_dict: dict) -> None:
        stage = int(state_dict["stage"])
        if not 0 <= stage < len(self.factors):
            raise ValueError(f"BudgetCurriculum: the checkpoint is at stage {stage}, but factors {self.factors} "
                             f"have {len(self.factors)} stages: resume with the factors it was trained with")
        self.stage = stage
        self.gate.restore(state_dict["recent"])
