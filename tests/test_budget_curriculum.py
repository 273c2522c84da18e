"""BudgetCurriculum: routers train at a multiple of their budget first, down to the configured one;
validation always sees the configured budget."""
from __future__ import annotations

import lightning as L
import pytest
import torch

from colt5_lightning.data import MatchingMarksDataModule
from colt5_lightning.models import RoutingConfig
from colt5_lightning.training import BudgetCurriculum, ImageClassificationModule
from colt5_lightning.training.budget_curriculum import routed_budgets

ROUTING = RoutingConfig(num_heavy_attn_tokens_q=2, num_heavy_attn_tokens_kv=3, num_heavy_ff_tokens=4,
                        light_dim_head=8, light_heads=2, light_window_size=4, heavy_dim_head=8, heavy_heads=2)


def image_module(dense: bool = False, routing: RoutingConfig = ROUTING) -> ImageClassificationModule:
    return ImageClassificationModule(image_size=8, in_channels=3, dim=16, depth=2, routing=routing, dense=dense,
                                     optim=dict(warmup_steps=1))


def data() -> MatchingMarksDataModule:
    return MatchingMarksDataModule(image_size=8, num_colors=3, min_distance=4, batch_size=2, val_samples=2)


class BudgetRecorder(L.Callback):
    """The q / kv / ff budgets of the first block as each training and validation batch starts."""

    def __init__(self):
        self.train, self.val = [], []

    @staticmethod
    def _budgets(pl_module):
        block = pl_module.model.blocks[0]
        return (block.attn.num_heavy_tokens_q, block.attn.num_heavy_tokens_kv, block.ff.num_heavy_tokens)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append(self._budgets(pl_module))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.append(self._budgets(pl_module))


def fit(module, curriculum, max_steps: int, record: bool = True, **trainer_kwargs) -> BudgetRecorder:
    torch.set_num_threads(1)
    recorder = BudgetRecorder()
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[curriculum, recorder] if record else [curriculum], **trainer_kwargs)
    trainer.fit(module, datamodule=data())
    return recorder


def test_budget_steps_down_by_the_factors_when_the_metric_reaches_the_threshold():
    """train/loss stays far above 0.01, so each full window of 2 steps meets the threshold."""
    curriculum = BudgetCurriculum([4, 2, 1], metric="train/loss", threshold=0.01, window=2)
    recorder = fit(image_module(), curriculum, max_steps=6, limit_val_batches=0)
    assert recorder.train == [(8, 12, 16)] * 2 + [(4, 6, 8)] * 2 + [(2, 3, 4)] * 2
    assert curriculum.state_dict()["stage"] == 2


def test_budget_stays_while_the_metric_is_below_the_threshold():
    curriculum = BudgetCurriculum([4, 1], metric="train/acc", threshold=1.0, window=50)
    recorder = fit(image_module(), curriculum, max_steps=3, limit_val_batches=0)
    assert recorder.train == [(8, 12, 16)] * 3


def test_validation_runs_at_the_configured_budget_and_training_resumes_at_the_curriculum_s():
    curriculum = BudgetCurriculum([4, 1], metric="train/acc", threshold=1.0, window=50)
    recorder = fit(image_module(), curriculum, max_steps=4, val_check_interval=2, limit_val_batches=1,
                   check_val_every_n_epoch=None)
    assert recorder.val and set(recorder.val) == {(2, 3, 4)}
    assert recorder.train == [(8, 12, 16)] * 4


def test_the_model_keeps_its_configured_budget_after_fit():
    module = image_module()
    fit(module, BudgetCurriculum([4, 1], threshold=1.0), max_steps=2, limit_val_batches=0)
    assert set(routed_budgets(module).values()) == {2, 3, 4}


def test_a_dense_control_trains_unchanged():
    module = image_module(dense=True)
    fit(module, BudgetCurriculum([4, 1]), max_steps=2, record=False, limit_val_batches=0)
    assert module.trainer.global_step == 2


def test_a_light_only_model_has_no_budget_to_change():
    assert routed_budgets(image_module(routing=ROUTING.replace(heavy=False))) == {}


class FailAtStep(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 1:
            raise RuntimeError("injected")


def test_a_failed_fit_leaves_the_configured_budget_and_a_second_fit_starts_from_it():
    module = image_module()
    torch.set_num_threads(1)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[BudgetCurriculum([4, 1], threshold=1.0), FailAtStep()])
    with pytest.raises(RuntimeError, match="injected"):
        trainer.fit(module, datamodule=data())
    assert set(routed_budgets(module).values()) == {2, 3, 4}
    block = module.model.blocks[0]
    assert (block.attn.num_heavy_tokens_q, block.attn.num_heavy_tokens_kv, block.ff.num_heavy_tokens) == (2, 3, 4)
    recorder = fit(module, BudgetCurriculum([4, 1], threshold=1.0), max_steps=1, limit_val_batches=0)
    assert recorder.train == [(8, 12, 16)]


def test_a_missing_metric_is_warned_about_once():
    curriculum = BudgetCurriculum([4, 1], metric="train/no_such_metric")
    with pytest.warns(UserWarning, match="train/no_such_metric") as warned:
        fit(image_module(), curriculum, max_steps=3, limit_val_batches=0)
    assert sum("no_such_metric" in str(w.message) for w in warned) == 1


def test_a_resumed_fit_continues_at_the_checkpoint_s_budget(tmp_path):
    first = BudgetCurriculum([4, 2, 1], metric="train/loss", threshold=0.01, window=2)
    torch.set_num_threads(1)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
                        callbacks=[first])
    trainer.fit(image_module(), datamodule=data())
    path = tmp_path / "resume.ckpt"
    trainer.save_checkpoint(path)
    resumed = BudgetCurriculum([4, 2, 1], metric="train/loss", threshold=0.01, window=2)
    recorder = BudgetRecorder()
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
                        callbacks=[resumed, recorder])
    trainer.fit(image_module(), datamodule=data(), ckpt_path=path)
    assert first.state_dict()["stage"] == 1 and recorder.train == [(4, 6, 8)]


def test_a_checkpoint_from_longer_factors_is_refused_by_name():
    with pytest.raises(ValueError, match="stage 3"):
        BudgetCurriculum([2, 1]).load_state_dict({"stage": 3, "recent": []})


@pytest.mark.parametrize("kwargs, match", [
    (dict(factors=[]), "factors"), (dict(factors=[1, 2]), "descending"), (dict(factors=[4, 2]), "ending at 1"),
    (dict(factors=[4, 0]), "positive"), (dict(factors=[2.5, 1]), "ints"),
    (dict(threshold=0), "threshold"), (dict(window=0), "window"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BudgetCurriculum(**kwargs)


def test_oracle_routing_routes_the_marks_in_every_router_of_the_image_model():
    module = ImageClassificationModule(image_size=8, in_channels=3, dim=16, depth=2, routing=ROUTING,
                                       oracle_routing=True)
    dm = data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    routed = {}
    hooks = [router.register_forward_hook(lambda m, a, out, name=name: routed.__setitem__(name, out))
             for name, router in module.model.named_modules() if name.endswith("router")]
    loss, _ = module._step(batch)
    for hook in hooks:
        hook.remove()
    assert torch.isfinite(loss) and len(routed) == 6  # q, kv and ff routers of two blocks
    for name, routing in routed.items():
        selected = torch.zeros_like(batch["route_mask"]).scatter(1, routing.indices.flatten(1), True)
        assert (selected & batch["route_mask"]).sum() == batch["route_mask"].sum(), name
