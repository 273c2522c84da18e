"""The progress bar names the step limit of a step-based run instead of "Epoch 0/-2"."""
from types import SimpleNamespace

from colt5_lightning.training.progress import StepsProgressBar


def description(max_epochs, max_steps):
    bar = StepsProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=max_epochs, max_steps=max_steps)
    return bar._get_train_description(0).strip()


def test_a_step_based_run_shows_its_step_limit():
    assert description(-1, 600) == "Epoch 0 · to step 600"


def test_an_epoch_based_run_keeps_lightning_s_epoch_count():
    assert description(3, -1) == "Epoch 0/2"
