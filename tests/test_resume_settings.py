"""training.resume: which settings of a checkpoint a run started from it may change."""
import pytest

from colt5_lightning.training.resume import setting_differences, split_changes, with_defaults_of_newer_settings


def test_nested_settings_are_compared_by_dotted_key():
    saved = {"dim": 64, "routing": {"router_type": "coor_descent", "router_kwargs": {"score_noise": 1.0}}}
    requested = {"dim": 64, "routing": {"router_type": "sinkhorn", "router_kwargs": {"score_noise": 0.5}}}
    assert setting_differences(saved, requested) == {"routing.router_type": ("coor_descent", "sinkhorn"),
                                                     "routing.router_kwargs.score_noise": (1.0, 0.5)}


@pytest.mark.parametrize("saved, requested", [((0.9, 0.98), [0.9, 0.98]), (2, 2.0)])
def test_equal_values_of_other_types_are_no_change(saved, requested):
    assert setting_differences({"x": saved}, {"x": requested}) == {}


def test_lightning_bookkeeping_and_settings_named_on_one_side_only_are_ignored():
    assert setting_differences({"_instantiator": "a", "_class_path": "b", "old": 1}, {"new": 2}) == {}


def test_a_group_named_as_changeable_covers_its_settings_and_nothing_else():
    differences = {"optim.lr": (1e-3, 5e-4), "routing.light_window_size": (64, 32), "optimizer": (1, 2)}
    refused, accepted = split_changes(differences, ["optim"])
    assert set(accepted) == {"optim.lr"}
    assert set(refused) == {"routing.light_window_size", "optimizer"}


class _Module:
    def __init__(self, dim: int = 64, readout: str = "mean", routing: dict = {"window": 4}, compile="off"):  # noqa: B006
        pass


def test_a_setting_added_after_the_checkpoint_counts_at_its_default():
    saved = with_defaults_of_newer_settings({"dim": 32, "compile": "default"}, _Module)
    assert saved == {"dim": 32, "compile": "default", "readout": "mean"}  # the saved values win
    assert setting_differences(saved, {"dim": 32, "readout": "corner"}) == {"readout": ("mean", "corner")}
