"""RouterMonitor: per-layer router statistics reach the logger, and cost nothing when absent."""
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from colt5_lightning.models import RoutingConfig
from colt5_lightning.routing import Router
from colt5_lightning.routing.causal import CausalRouter
from colt5_lightning.training import (ImageClassificationModule, LanguageModelModule, RouterMonitor,
                                      SequenceClassificationModule)
from colt5_lightning.training import router_monitor
from colt5_lightning.training.router_monitor import STATS, name_routers, routing_statistics

ROUTING = RoutingConfig(num_heavy_attn_tokens_q=6, num_heavy_attn_tokens_kv=6, num_heavy_ff_tokens=6,
                        light_dim_head=8, light_heads=2, light_window_size=8, heavy_dim_head=8, heavy_heads=2)
TINY = dict(dim=32, depth=2, routing=ROUTING)
KINDS = ("q", "kv", "ff")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny ops run fastest on one thread; extra threads only spin on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def lm_module(router_type="coor_descent"):
    return LanguageModelModule(seq_len=32, dim=32, depth=2, routing=ROUTING.replace(router_type=router_type),
                               sample_length=0)


def lm_loader(n=8):
    ids = torch.randint(0, 256, (n, 33))
    return DataLoader([{"input_ids": r[:-1], "targets": r[1:]} for r in ids], batch_size=4)


def padded_sequence_loader(n=8, seq_len=24):
    ids = torch.randint(0, 10, (n, seq_len))
    lengths = torch.randint(8, seq_len, (n,))
    mask = torch.arange(seq_len) < lengths.unsqueeze(1)
    labels = torch.randint(0, 2, (n,))
    return DataLoader([{"inputs": i, "mask": m, "label": y} for i, m, y in zip(ids, mask, labels)], batch_size=4)


def image_loader(n=8):
    images, labels = torch.randn(n, 1, 16, 16), torch.randint(0, 2, (n,))
    return DataLoader([{"inputs": x, "label": y} for x, y in zip(images, labels)], batch_size=4)


def fit(module, loader, callbacks, logger=False, steps=2, log_every=1):
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        log_every_n_steps=log_every)
    trainer.fit(module, loader)
    return trainer


def router_keys(metrics):
    return {k for k in metrics if k.startswith("router/")}


def expected_keys(depth=2):
    keys = {f"router/layer{i}/{kind}/{stat}" for i in range(depth) for kind in KINDS for stat in STATS}
    return keys | {f"router/layer{i}/q/kv_overlap" for i in range(depth)}


@pytest.mark.parametrize("router_type", ["coor_descent", "sinkhorn", "cum_softmax"])
def test_language_model_router_metrics_are_logged(tmp_path, router_type):
    torch.manual_seed(0)
    trainer = fit(lm_module(router_type), lm_loader(), [RouterMonitor()], CSVLogger(tmp_path))
    logged = trainer.logged_metrics
    assert router_keys(logged) == expected_keys()
    assert all(math.isfinite(float(logged[k])) for k in router_keys(logged))
    assert all(float(logged[f"router/layer{i}/{kind}/pad_frac"]) == 0 for i in range(2) for kind in KINDS)
    csv = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "router/layer1/ff/frac_routed" in csv


def test_padding_is_never_routed_in_a_padded_batch(tmp_path):
    torch.manual_seed(0)
    module = SequenceClassificationModule(vocab_size=10, num_classes=2, max_seq_len=24,
                                          dim=32, depth=2,
                                          routing=ROUTING.replace(num_heavy_ff_tokens=20, num_heavy_attn_tokens_q=20))
    trainer = fit(module, padded_sequence_loader(), [RouterMonitor()], CSVLogger(tmp_path))
    logged = trainer.logged_metrics
    assert router_keys(logged) == expected_keys()
    for i in range(2):
        for kind in KINDS:
            assert float(logged[f"router/layer{i}/{kind}/pad_frac"]) == 0.0
            assert 0 < float(logged[f"router/layer{i}/{kind}/frac_routed"]) <= 1.0
        assert 0.0 <= float(logged[f"router/layer{i}/q/kv_overlap"]) <= 1.0
        assert float(logged[f"router/layer{i}/q/topk_margin"]) >= 0  # a global top-k by score


def test_image_model_histograms_reach_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    module = ImageClassificationModule(image_size=16, in_channels=1, num_classes=2, patch_size=2,
                                       dim=32, depth=2, routing=ROUTING.replace(light_window_size=4))
    logger = TensorBoardLogger(tmp_path, name="img")
    trainer = fit(module, image_loader(), [RouterMonitor(histogram_every_n_steps=1)], logger)
    assert router_keys(trainer.logged_metrics) == expected_keys()
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir, size_guidance={"histograms": 0})
    events.Reload()
    assert {f"router/layer{i}/{kind}/positions" for i in range(2) for kind in KINDS} <= set(events.Tags()["histograms"])
    histogram = events.Histograms("router/layer0/q/positions")[0].histogram_value
    assert histogram.num > 0 and 0.0 <= histogram.min and histogram.max < 1.0


def test_statistics_are_collected_only_on_logging_steps(monkeypatch):
    calls = []
    real = router_monitor.routing_statistics
    monkeypatch.setattr(router_monitor, "routing_statistics", lambda *a: calls.append(1) or real(*a))
    module = lm_module()
    loader = lm_loader(16)
    fit(module, loader, [RouterMonitor(histogram_every_n_steps=0)], steps=4, log_every=2)
    routers = sum(isinstance(m, (Router, CausalRouter)) for m in module.modules())
    assert len(calls) == 2 * routers  # steps 2 and 4 of 4, one call per router each


def test_hooks_are_removed_at_teardown_and_absent_without_the_callback():
    module = lm_module()
    routers = [m for m in module.modules() if isinstance(m, (Router, CausalRouter))]
    seen = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(all(len(r._forward_hooks) == 1 for r in routers))

    fit(module, lm_loader(4), [RouterMonitor(), Spy()], steps=1)
    assert seen == [True]
    assert all(not r._forward_hooks for r in routers)
    fit(module, lm_loader(4), [], steps=1)
    assert all(not m._forward_hooks for m in module.modules())


def test_routers_are_named_by_layer_and_kind():
    names = [key for _, key, _ in name_routers(lm_module())]
    assert names == [f"router/layer{i}/{kind}" for i in range(2) for kind in KINDS]


def test_routing_statistics_on_a_known_routing():
    torch.manual_seed(0)
    router = Router(8, router_type="coor_descent", n_iters=50).eval()
    x = torch.randn(2, 16, 8)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 10:] = False
    routing = router(x, num_tokens=4, mask=mask)
    stats = routing_statistics(routing, mask)
    assert set(stats) == set(STATS)
    assert float(stats["frac_routed"]) == pytest.approx(8 / 26)  # 4 slots per row over 16 + 10 valid tokens
    assert float(stats["pad_frac"]) == 0.0
    assert float(stats["topk_margin"]) >= 0.0
    assert float(stats["sum_residual"]) < 1e-3  # coordinate descent meets Σw = k
    assert 0.0 <= float(stats["weight_entropy"]) <= math.log(2)
    chosen = routing.weights.detach()[routing.routed_mask]
    assert float(stats["weight_mean"]) == pytest.approx(float(chosen.mean()), rel=1e-5)
    assert float(stats["weight_std"]) == pytest.approx(float(chosen.std(unbiased=False)), rel=1e-4, abs=1e-6)
    scores = routing.scores.detach()[1, 0, :10]
    top = scores.topk(5).values
    margin_row1 = float(top[3] - top[4])
    top0 = routing.scores.detach()[0, 0].topk(5).values
    assert float(stats["topk_margin"]) == pytest.approx((margin_row1 + float(top0[3] - top0[4])) / 2, rel=1e-5)


def masked_lm_loader(n=8, seq_len=32, marked=(3, 17, 30)):
    """LM batches with a "route_mask" marking a few positions, as the passkey data gives."""
    ids = torch.randint(0, 256, (n, seq_len + 1))
    mask = torch.zeros(seq_len, dtype=torch.bool)
    mask[list(marked)] = True
    return DataLoader([{"input_ids": r[:-1], "targets": r[1:], "route_mask": mask} for r in ids], batch_size=4)


def recall_keys(depth=2):
    return {f"router/layer{i}/{kind}/oracle_recall" for i in range(depth) for kind in KINDS}


@pytest.mark.parametrize("oracle", [False, True])
def test_oracle_recall_is_logged_for_batches_with_a_route_mask(tmp_path, oracle):
    torch.manual_seed(0)
    module = LanguageModelModule(seq_len=32, **TINY, sample_length=0, oracle_routing=oracle)
    logged = fit(module, masked_lm_loader(), [RouterMonitor()], CSVLogger(tmp_path)).logged_metrics
    assert router_keys(logged) == expected_keys() | recall_keys()
    recalls = [float(logged[k]) for k in recall_keys()]
    assert all(0.0 <= r <= 1.0 for r in recalls)
    if oracle:  # routed by hand: every marked token is routed by every router
        assert recalls == [1.0] * len(recalls)


def test_oracle_recall_is_not_logged_without_a_route_mask(tmp_path):
    logged = fit(lm_module(), lm_loader(), [RouterMonitor()], CSVLogger(tmp_path)).logged_metrics
    assert not router_keys(logged) & recall_keys()


def test_oracle_recall_counts_a_token_selected_by_any_route_or_segment():
    mask = torch.tensor([[True, False, True, False, True, False]])
    whole = torch.tensor([[[True, False, False, False, True, True], [False, False, False, False, False, False]]])
    assert float(router_monitor.oracle_recall(whole, mask)) == pytest.approx(2 / 3)
    segments = whole[:, :1].view(1, 1, 2, 3).transpose(1, 2).reshape(2, 1, 3)  # (b·S, r, L)
    assert float(router_monitor.oracle_recall(segments, mask)) == pytest.approx(2 / 3)
