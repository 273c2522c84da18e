"""The benchmarks run at tiny sizes, so they cannot rot; the fused CUDA path matches eager."""
import json

import pytest
import torch

from bench import block, throughput
from colt5_lightning.routing import coor_descent


def test_block_benchmark_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    payload = block.main(["--sizes", "256", "--blocks", "dense", "coor_descent", "--repeats", "1",
                          "--warmup", "0", "--json", str(out)])
    assert {row["block"] for row in payload["rows"]} == {"dense", "coor_descent"}
    assert all(row["fwd_bwd_s"] > 0 for row in payload["rows"])
    assert json.loads(out.read_text())["rows"][1]["speedup_vs_dense"] > 0
    assert "fwd+bwd ms" in capsys.readouterr().out


def test_throughput_benchmark_compares_routed_and_dense(tmp_path):
    payload = throughput.main(["--contexts", "128", "--dim", "32", "--depth", "1", "--heads", "2",
                               "--dim-head", "16", "--window", "32", "--steps", "1",
                               "--json", str(tmp_path / "t.json")])
    row = payload["rows"][0]
    assert row["routed"] > 0 and row["dense"] > 0


def test_throughput_times_the_lightning_modules_own_training_step(monkeypatch):
    from colt5_lightning.training import LanguageModelModule
    calls = []
    step = LanguageModelModule.training_step
    monkeypatch.setattr(LanguageModelModule, "training_step",
                        lambda self, batch, i: calls.append(self.hparams.dense) or step(self, batch, i))
    throughput.main(["--contexts", "64", "--dim", "16", "--depth", "1", "--heads", "2", "--dim-head", "8",
                     "--window", "16", "--steps", "2"])
    assert calls == [False] * 3 + [True] * 3  # one warm-up and two timed steps per model


def test_throughput_rounds_alternate_the_models_and_report_the_median_ratio(monkeypatch):
    speeds = iter([(300.0, 100.0), (100.0, 100.0), (500.0, 100.0)])  # (routed, dense) tokens/s per round
    current, order = {}, []

    def fake_measure(args, context, dense, precision):
        order.append("dense" if dense else "routed")
        if not dense:
            current["round"] = next(speeds)
        return {"tokens_per_s": current["round"][dense], "step_s": 1.0, "peak_bytes": None}

    monkeypatch.setattr(throughput, "measure", fake_measure)
    row = throughput.main(["--contexts", "64", "--rounds", "3"])["rows"][0]
    assert order == ["routed", "dense"] * 3
    assert row["round_ratios"] == [3.0, 1.0, 5.0]
    assert row["routed_over_dense"] == 3.0 and row["routed"] == 300.0


def test_throughput_rounds_below_one_are_refused(capsys):
    with pytest.raises(SystemExit):
        throughput.main(["--contexts", "64", "--rounds", "0"])
    assert "--rounds must be at least 1" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["exact", "iterative"])
def test_fused_coor_descent_matches_eager_on_cuda(method):
    s = torch.randn(4, 8192, device="cuda") * 2
    mask = torch.rand_like(s) > 0.1
    g = torch.randn_like(s)
    results = []
    for fused in (False, True):
        x = s.clone().requires_grad_()
        w = coor_descent(x, k=512, n_iters=20, eps=0.03, eps_init=4.0, eps_decay=0.7, mask=mask,
                         method=method, fused=fused)
        (w * g).sum().backward()
        results.append((w.detach(), x.grad))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-4, rtol=0)
    torch.testing.assert_close(results[1][1], results[0][1], atol=1e-3, rtol=1e-3)


def test_profile_benchmark_splits_the_time():
    from bench import profile_block
    row = profile_block.main(["--tokens", "256", "--runs", "1"])[0]
    assert 0 < row["gemm_ms"] < row["total_ms"] and row["sdpa_ms"] > 0


def test_router_benchmark_times_every_router_type_against_coor_descent(tmp_path):
    from bench import routers
    payload = routers.main(["--length", "128", "--batch", "1", "--dim", "32", "--heads", "2", "--dim-head", "16",
                            "--window", "16", "--k", "16", "--steps", "1", "--json", str(tmp_path / "r.json")])
    rows = {row["router_type"]: row for row in payload["rows"]}
    assert set(rows) == {"coor_descent", "sinkhorn", "cum_softmax"}
    assert rows["coor_descent"]["over_coor_descent"] == 1.0
    assert all(row["steps_per_s"] > 0 for row in rows.values())
