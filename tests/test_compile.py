"""`compile`: the models capture as one graph, and a compiled training step equals an eager one."""
from pathlib import Path

import pytest
import torch
import torch._dynamo as dynamo
import torch.nn.functional as F

from colt5_lightning.models import RoutingConfig
from colt5_lightning.training import ImageClassificationModule, LanguageModelModule, SequenceClassificationModule

ROUTING = RoutingConfig(light_heads=2, light_dim_head=8, heavy_heads=2, heavy_dim_head=8, light_window_size=8,
                        num_heavy_attn_tokens_q=8, num_heavy_attn_tokens_kv=8, num_heavy_ff_tokens=8)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    dynamo.reset()
    yield
    dynamo.reset()


def lm(**kwargs):
    torch.manual_seed(0)
    return LanguageModelModule(seq_len=32, dim=32, depth=2, routing=ROUTING, sample_length=0, **kwargs)


def lm_loss(module, ids):
    return F.cross_entropy(module(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())


def sequence_classifier(**kwargs):
    torch.manual_seed(0)
    return SequenceClassificationModule(20, 10, 64, 32, 2, routing=ROUTING, **kwargs)


def image_classifier(**kwargs):
    torch.manual_seed(0)
    return ImageClassificationModule(16, 1, 2, 2, 32, 2, routing=ROUTING.replace(light_window_size=4), **kwargs)


CASES = {
    "lm": (lm, lambda m: lm_loss(m, torch.randint(0, 256, (2, 33)))),
    "sequence": (sequence_classifier, lambda m: F.cross_entropy(
        m(torch.randint(0, 20, (2, 64)), torch.arange(64).expand(2, 64) < torch.tensor([[64], [50]])),
        torch.tensor([1, 2]))),
    "image": (image_classifier, lambda m: F.cross_entropy(m(torch.randn(2, 1, 16, 16)), torch.tensor([0, 1]))),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_forward_and_loss_capture_as_one_graph(case, training):
    build, loss = CASES[case]
    module = build().train(training)
    explanation = dynamo.explain(loss)(module)
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]


@pytest.mark.parametrize("case", CASES)
def test_a_compiled_training_step_equals_an_eager_one(case):
    build, loss = CASES[case]
    eager, compiled = build(), build(compile="aot_eager")
    results = []
    for module in (eager, compiled):
        torch.manual_seed(1)  # the same inputs and router noise
        value = loss(module.train())
        value.backward()
        results.append((value.detach(), [p.grad for p in module.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    for got, expected in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_compiling_keeps_parameter_names_and_generation_eager():
    eager, compiled = lm(), lm(compile="aot_eager")
    assert list(compiled.state_dict()) == list(eager.state_dict())
    compiled.eval()
    frames = dynamo.utils.counters["stats"]["calls_captured"]
    compiled.model.generate(torch.randint(0, 256, (1, 4)), 6)
    assert dynamo.utils.counters["stats"]["calls_captured"] == frames  # sampling never entered dynamo


def test_an_unknown_compile_mode_is_named():
    with pytest.raises(ValueError, match="compile must be one of"):
        lm(compile="fast")


def test_the_trainer_step_runs_compiled_under_the_cli(tmp_path):
    from colt5_lightning.cli import cli
    repo = Path(__file__).resolve().parents[1]
    cli(["fit", "--config", str(repo / "configs/model/lm/tiny.yaml"), "--config", str(repo / "configs/data/passkey.yaml"),
         "--data.init_args.seq_len", "128", "--data.init_args.batch_size", "2", "--data.init_args.val_samples", "2",
         "--model.init_args.sample_length", "0", "--model.init_args.compile", "aot_eager",
         "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.fast_dev_run", "2",
         "--trainer.default_root_dir", str(tmp_path)])
    assert dynamo.utils.counters["stats"]["calls_captured"] > 0
