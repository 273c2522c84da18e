"""RouterMonitor: logs what the routers of any model built from this package are doing.

At fit start it puts a forward hook on every Router and CausalRouter submodule. A hook reads
the `Routing` the router returned, but only on training steps where the trainer writes logs
(every `trainer.log_every_n_steps`) or draws a histogram, so the cost is one flag check per
router call on other steps, and nothing at all without the callback. The hooks are removed at
teardown. The routing math knows nothing about any of this.

Keys are `router/layer{i}/{kind}/{stat}`: i is the block index in the router's module path
(`blocks.3.attn.q_router` is layer 3), kind is q, kv (attention queries and key/values) or ff.
Per router, over the valid (unmasked) tokens of the batch:

- frac_routed:    routed slots / valid tokens (per routing token, for multi-route kv).
- weight_entropy: mean binary entropy (nats) of the soft top-k weights all_weights; near 0
                  when the weights are a hard 0/1 selection, at most ln 2.
- weight_mean, weight_std: of the weights that scale the routed slots.
- topk_margin:    lowest score among selected tokens minus highest score among unselected valid
                  tokens, per row, averaged over rows that have both. >= 0 for a global top-k;
                  for causal routers (a threshold per segment) it can be negative.
- sum_residual:   |Σ all_weights − k| / k per row, k clamped to the number of valid tokens: how
                  far the soft top-k is from its budget. For a causal router k is the budget of
                  its thresholds (CausalRouter.steady_budget), so it measures how well thresholds
                  judged on earlier windows carry over to later tokens.
- pad_frac:       routed slots that point at padding / routed slots. Must be 0.
- kv_overlap (q routers only): |queries selected ∩ key/values selected| / |queries selected|.
- oracle_recall (only for batches with a "route_mask", as the passkey data gives): |selected ∩
                  route_mask| / |route_mask|, the share of the tokens an oracle would route
                  (routing.oracle) that the router routed.

Undefined values (e.g. no row has both a selected and an unselected token) are logged as 0,
so every process logs the same keys. Key/value routing inside segments (causal attention)
is seen per segment. Every `histogram_every_n_steps` steps, when a TensorBoardLogger is
attached, rank 0 also writes `router/layer{i}/{kind}/positions`: a histogram of the routed
positions divided by the sequence (or segment) length.
"""
from __future__ import annotations

import re
from collections import Counter
from functools import partial
from typing import Dict, List, Optional, Tuple

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from ..routing import Router, Routing
from ..routing.causal import CausalRouter

STATS = ("frac_routed", "weight_entropy", "weight_mean", "weight_std", "topk_margin", "sum_residual",
         "pad_frac")


def selected_positions(routing: Routing, n: int) -> Tensor:
    """(b, r, n) bool: the positions held by a valid routed slot."""
    return Router.routed_positions(routing, n)


def _mean_where(values: Tensor, ok: Tensor) -> Tensor:
    return torch.where(ok, values, 0.0).sum() / ok.sum().clamp_min(1)


def _sum_residual(all_weights: Tensor, valid: Tensor, k) -> Tensor:
    k = torch.as_tensor(k, dtype=torch.float32, device=all_weights.device).reshape(-1, 1)  # (1|b, 1)
    k_eff = torch.minimum(k, valid.sum(-1).float())
    total = (all_weights * valid).sum(-1)
    return _mean_where((total - k_eff).abs() / k_eff.clamp_min(1e-6), k_eff > 0)


@torch.no_grad()
def routing_statistics(routing: Routing, mask: Optional[Tensor] = None,
                       budget: Optional[float] = None) -> Dict[str, Tensor]:
    """The statistics listed in the module docstring, as 0-d float tensors (no host sync).

    mask (b, n) marks the valid tokens of the router's input; budget replaces routing.num_tokens
    as the weight sum sum_residual expects (a CausalRouter's steady_budget).
    """
    scores = routing.scores.float()
    b, r, n = scores.shape
    valid = (torch.ones(b, n, dtype=torch.bool, device=scores.device) if mask is None else mask)
    valid = valid.unsqueeze(1).expand(b, r, n)
    slots = routing.routed_mask
    n_routed = slots.sum().float()
    selected = selected_positions(routing, n)

    weights = routing.weights.float()
    w_mean = (weights * slots).sum() / n_routed.clamp_min(1)
    w_var = (((weights - w_mean) ** 2) * slots).sum() / n_routed.clamp_min(1)

    w_all = routing.all_weights.float().clamp(0.0, 1.0)
    entropy = -(torch.special.xlogy(w_all, w_all) + torch.special.xlogy(1 - w_all, 1 - w_all))

    lowest_selected = torch.where(selected, scores, float("inf")).amin(-1)
    best_unselected = torch.where(valid & ~selected, scores, float("-inf")).amax(-1)
    has_both = torch.isfinite(lowest_selected) & torch.isfinite(best_unselected)

    padded = slots & ~valid.gather(-1, routing.indices)
    return {
        "frac_routed": n_routed / valid.sum().clamp_min(1),
        "weight_entropy": _mean_where(entropy, valid),
        "weight_mean": w_mean,
        "weight_std": w_var.sqrt(),
        "topk_margin": _mean_where(lowest_selected - best_unselected, has_both),
        "sum_residual": _sum_residual(routing.all_weights.float(), valid,
                                      routing.num_tokens if budget is None else budget),
        "pad_frac": padded.sum() / n_routed.clamp_min(1),
    }


def selected_tokens(selected: Tensor, b: int, n: int) -> Tensor:
    """(b, n): whether any route selected each token, from a selection (b, r, n), or (b·S, r, L)
    when the router worked inside segments of L tokens."""
    if selected.shape[0] != b:
        bs, r, L = selected.shape
        selected = selected.view(b, bs // b, r, L).transpose(1, 2).reshape(b, r, -1)[..., :n]
    return selected.any(1)


def query_kv_overlap(q_selected: Tensor, kv_selected: Tensor) -> Tensor:
    """|q ∩ kv| / |q| from selections (b, 1, n) and (b, r, n), or (b·S, r, L) when the key/values
    were routed inside segments of L tokens (a kv position counts if any route selected it)."""
    b, _, n = q_selected.shape
    q = q_selected.any(1)
    return (q & selected_tokens(kv_selected, b, n)).sum().float() / q.sum().clamp_min(1)


def oracle_recall(selected: Tensor, route_mask: Tensor) -> Tensor:
    """|selected ∩ route_mask| / |route_mask| for a selection as in selected_tokens and a (b, n) mask."""
    b, n = route_mask.shape
    mask = route_mask.to(selected.device).bool()
    return (selected_tokens(selected, b, n) & mask).sum().float() / mask.sum().clamp_min(1)


def name_routers(module: nn.Module) -> List[Tuple[str, str, nn.Module]]:
    """(module path, log key prefix, router) for every Router/CausalRouter under module.

    `...blocks.3.attn.q_router` -> `router/layer3/q`, `...kv_router` -> kv, `...ff.router` -> ff.
    Paths that would share a prefix (e.g. two stacks) fall back to `router/<path with slashes>`.
    """
    found = []
    for path, m in module.named_modules():
        if not isinstance(m, (Router, CausalRouter)):
            continue
        parts = path.split(".")
        numeric = [i for i, p in enumerate(parts) if re.fullmatch(r"\d+", p)]
        if not numeric:
            found.append((path, "router/" + path.replace(".", "/"), m))
            continue
        at = numeric[-1]
        rest = parts[at + 1:]
        last = rest[-1] if rest else ""
        if last.endswith("_router"):
            kind = last[: -len("_router")]
        elif last == "router" and len(rest) > 1:
            kind = rest[-2]
        else:
            kind = "_".join(rest) or "router"
        found.append((path, f"router/layer{parts[at]}/{kind}", m))
    counts = Counter(key for _, key, _ in found)
    return [(path, key if counts[key] == 1 else "router/" + path.replace(".", "/"), m) for path, key, m in found]


class RouterMonitor(pl.Callback):
    """Logs routing statistics per layer and router (see the module docstring for the keys).

    Args:
        histogram_every_n_steps: draw position histograms every this many optimizer steps when a
            TensorBoardLogger is attached; 0 never.
    """

    def __init__(self, histogram_every_n_steps: int = 500):
        super().__init__()
        if isinstance(histogram_every_n_steps, bool) or not isinstance(histogram_every_n_steps, int) \
                or histogram_every_n_steps < 0:
            raise ValueError(f"histogram_every_n_steps must be a non-negative int, got {histogram_every_n_steps!r}")
        self.histogram_every_n_steps = histogram_every_n_steps
        self._routers: List[Tuple[str, str, nn.Module]] = []
        self._handles: list = []
        self._collect = False
        self._histogram = False
        self._stats: Dict[str, Dict[str, Tensor]] = {}
        self._selected: Dict[str, Tensor] = {}
        self._positions: Dict[str, Tensor] = {}
        self._route_mask: Optional[Tensor] = None

    # ---- hooks on the routers -------------------------------------------------------------
    def _hook(self, key: str, module: nn.Module, args: tuple, kwargs: dict, output: Routing) -> None:
        if not (self._collect or self._histogram):
            return
        x = args[0] if args else kwargs["x"]
        budget = (module.steady_budget(output.num_tokens, x.shape[1])
                  if isinstance(module, CausalRouter) else None)
        with torch.no_grad():
            if self._collect:
                self._stats[key] = routing_statistics(output, kwargs.get("mask"), budget)
                self._selected[key] = selected_positions(output, x.shape[1])
            if self._histogram:
                positions = output.indices[output.routed_mask].float() / x.shape[1]
                self._positions[key] = positions.detach().cpu()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()
        self._routers = name_routers(pl_module)
        for _, key, router in self._routers:
            self._handles.append(router.register_forward_hook(partial(self._hook, key), with_kwargs=True))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._collect = self._histogram = False

    # ---- per training step ----------------------------------------------------------------
    @staticmethod
    def _logs_this_step(trainer: pl.Trainer) -> bool:
        connector = getattr(trainer, "_logger_connector", None)
        if connector is not None and hasattr(connector, "should_update_logs"):
            return bool(connector.should_update_logs)
        every = trainer.log_every_n_steps
        return every > 0 and (trainer.global_step + 1) % every == 0

    def _tensorboard(self, trainer: pl.Trainer) -> Optional[TensorBoardLogger]:
        return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._stats.clear()
        self._selected.clear()
        self._positions.clear()
        self._collect = bool(self._routers) and self._logs_this_step(trainer)
        self._route_mask = batch.get("route_mask") if isinstance(batch, dict) else None
        every = self.histogram_every_n_steps
        self._histogram = (bool(self._routers) and every > 0 and trainer.global_step % every == 0
                           and trainer.is_global_zero and self._tensorboard(trainer) is not None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._collect:
            self._log_stats(trainer, pl_module)
        if self._histogram:
            tensorboard = self._tensorboard(trainer)
            for key, positions in self._positions.items():
                if positions.numel():
                    tensorboard.experiment.add_histogram(f"{key}/positions", positions, trainer.global_step)
        self._collect = self._histogram = False
        self._route_mask = None
        self._stats.clear()
        self._selected.clear()
        self._positions.clear()

    def _log_stats(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        names, values = [], []
        zero = torch.zeros((), device=pl_module.device)
        paths = {path: key for path, key, _ in self._routers}
        for path, key, _ in self._routers:  # fixed order and keys, so every process agrees
            stats = self._stats.get(key, {})
            for stat in STATS:
                names.append(f"{key}/{stat}")
                values.append(stats.get(stat, zero))
            if path.endswith("q_router"):
                kv_key = paths.get(path[: -len("q_router")] + "kv_router")
                if kv_key is not None:
                    names.append(f"{key}/kv_overlap")
                    both = key in self._selected and kv_key in self._selected
                    values.append(query_kv_overlap(self._selected[key], self._selected[kv_key]) if both else zero)
            if self._route_mask is not None:
                names.append(f"{key}/oracle_recall")
                values.append(oracle_recall(self._selected[key], self._route_mask) if key in self._selected else zero)
        if not names:
            return
        stacked = torch.stack([v.float().to(zero.device) for v in values])
        stacked = trainer.strategy.reduce(stacked, reduce_op="mean")  # one collective for all keys
        pl_module.log_dict(dict(zip(names, stacked.unbind())), on_step=True, on_epoch=False)
