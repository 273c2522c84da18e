"""The progress bar names the step limit of a step-based run instead of "Epoch 0/-2"; the model
summary leaves out FLOPs that Lightning did not count."""
from types import SimpleNamespace

from colt5_lightning.training.progress import ParamsModelSummary, StepsProgressBar


def description(max_epochs, max_steps):
    bar = StepsProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=max_epochs, max_steps=max_steps)
    return bar._get_train_description(0).strip()


def test_a_step_based_run_shows_its_step_limit():
    assert description(-1, 600) == "Epoch 0 · to step 600"


def test_an_epoch_based_run_keeps_lightning_s_epoch_count():
    assert description(3, -1) == "Epoch 0/2"


SUMMARY = [(" ", ["0"]), ("Name", ["model"]), ("Type", ["CoLT5LanguageModel"]), ("Params", ["1.1 M"]),
           ("Mode", ["train"]), ("FLOPs", ["0"])]


def summary_text(capsys, total_flops):
    ParamsModelSummary.summarize(SUMMARY, 1_100_000, 1_100_000, 4.4, {"train": 59, "eval": 0}, total_flops)
    return capsys.readouterr().out


def test_the_model_summary_leaves_out_flops_that_were_not_counted(capsys):
    text = summary_text(capsys, 0)
    assert "FLOPs" not in text
    assert "CoLT5LanguageModel" in text and "Total params: 1.1 M" in text and "59 / 0" in text


def test_the_model_summary_shows_flops_that_were_counted(capsys):
    assert "Total FLOPs: 2.0 K" in summary_text(capsys, 2000)


def test_the_colt5_command_uses_this_summary():
    from colt5_lightning.cli import trainer_defaults
    assert any(isinstance(c, ParamsModelSummary) for c in trainer_defaults()["callbacks"])
