"""Tests for colt5_lightning.data: batch formats, determinism, splits, caching and argument errors."""
from __future__ import annotations

import os
import pickle
import time
import typing
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from colt5_lightning.data import (
    ByteTextDataModule,
    FeatureMapDataModule,
    ListOpsDataModule,
    MarkColourDataModule,
    MatchingMarksDataModule,
    PasskeyDataModule,
    PathfinderDataModule,
)
from colt5_lightning.data import byte_corpus
from colt5_lightning.data.byte_windows import RandomWindowSampler
from colt5_lightning.data.listops import evaluate
from colt5_lightning.data.listops_grammar import OPERATORS, depth, encode, generate, to_text, tokenize
from colt5_lightning.data.passkey import make_sample, min_seq_len

ALL_MODULES = [ByteTextDataModule, PasskeyDataModule, ListOpsDataModule, PathfinderDataModule, MatchingMarksDataModule,
               MarkColourDataModule, FeatureMapDataModule]


def first_batch(dm, split: str = "train") -> dict:
    dm.setup("fit")
    loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
    return next(iter(loader))


def all_batches(loader) -> dict:
    batches = list(loader)
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


def assert_same_batches(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("COLT5_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def text_file(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "routed", "tokens", "light", "heavy"]
    text = " ".join(words[i] for i in rng.integers(0, len(words), size=4000))
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    return path


@pytest.fixture
def text_folder(tmp_path) -> Path:
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_text("second file. " * 100)
    (root / "a.md").write_text("# first file\n" * 100)
    (root / "sub" / "c.py").write_text("print('third file')\n" * 100)
    (root / "skipped.bin").write_bytes(b"\x00" * 500)
    return root


# ----------------------------------------------------------------------------- all modules


@pytest.mark.parametrize("cls", ALL_MODULES, ids=lambda c: c.__name__)
def test_init_args_are_plain_annotated_types(cls):
    allowed = {int, float, str, bool, Optional[int], Optional[str], Optional[float]}
    hints = typing.get_type_hints(cls.__init__)
    params = [p for p in hints if p != "return"]
    assert "seed" in params and "batch_size" in params and "num_workers" in params
    for name in params:
        assert hints[name] in allowed, f"{cls.__name__}.{name}: {hints[name]}"


@pytest.mark.parametrize("cls", ALL_MODULES, ids=lambda c: c.__name__)
def test_init_args_parse_with_jsonargparse(cls, tmp_path):
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    args = ["--data.path", str(tmp_path / "x.npz")] if cls is FeatureMapDataModule else []
    config = parser.parse_args(args + ["--data.seed", "3", "--data.batch_size", "2"])
    assert config.data.seed == 3 and config.data.batch_size == 2


@pytest.mark.parametrize("cls", [PasskeyDataModule, ListOpsDataModule, PathfinderDataModule, MatchingMarksDataModule,
                                 MarkColourDataModule], ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"seed": 1.5}, {"num_workers": -1}, {"train_samples": 0}, {"val_samples": -2}])
def test_shared_bad_arguments_name_the_argument(cls, bad):
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        cls(**bad)


def test_dataloader_before_setup_explains():
    with pytest.raises(RuntimeError, match="setup"):
        PasskeyDataModule(seq_len=128).val_dataloader()


# ----------------------------------------------------------------------------- ByteText


def test_byte_text_batch_format(text_file):
    dm = ByteTextDataModule(path=str(text_file), seq_len=32, batch_size=4, val_windows=8)
    batch = first_batch(dm)
    assert set(batch) == {"input_ids", "targets"}
    for key in batch:
        assert batch[key].shape == (4, 32) and batch[key].dtype == torch.long
    assert torch.equal(batch["input_ids"][:, 1:], batch["targets"][:, :-1])
    assert 0 <= int(batch["input_ids"].min()) and int(batch["input_ids"].max()) < dm.vocab_size == 256
    assert dm.seq_len == 32


def test_byte_text_windows_match_the_file(text_file):
    data = text_file.read_bytes()
    dm = ByteTextDataModule(path=str(text_file), seq_len=16, batch_size=4)
    batch = first_batch(dm)
    for ids, targets in zip(batch["input_ids"], batch["targets"]):
        window = bytes(ids.tolist()) + bytes(targets[-1:].tolist())
        assert window in data


def test_byte_text_val_is_identical_across_runs_and_epochs(text_file):
    make = lambda: ByteTextDataModule(path=str(text_file), seq_len=16, batch_size=4, val_windows=8, seed=5)
    a, b = make(), make()
    a.setup("fit"), b.setup("fit")
    first = all_batches(a.val_dataloader())
    assert_same_batches(first, all_batches(b.val_dataloader()))
    assert_same_batches(first, all_batches(a.val_dataloader()))
    assert first["input_ids"].shape == (8, 16)


def test_byte_text_train_windows_depend_on_seed(text_file):
    batch = lambda seed: first_batch(ByteTextDataModule(path=str(text_file), seq_len=16, batch_size=8, seed=seed))
    assert_same_batches(batch(1), batch(1))
    assert not torch.equal(batch(1)["input_ids"], batch(2)["input_ids"])


def test_random_window_sampler_changes_per_epoch_and_replays():
    sampler = RandomWindowSampler(num_windows=20, num_indices=10_000, seed=0)
    epoch0, epoch1 = list(sampler), list(sampler)
    assert epoch0 != epoch1 and len(epoch0) == 20
    sampler.set_epoch(0)
    assert list(sampler) == epoch0
    assert all(0 <= i < 10_000 for i in epoch0 + epoch1)


def test_byte_text_validation_comes_only_from_the_tail(tmp_path):
    path = tmp_path / "ab.txt"
    path.write_bytes(b"a" * 8000 + b"b" * 2000)
    dm = ByteTextDataModule(path=str(path), seq_len=64, batch_size=50, val_fraction=0.2,
                            train_windows_per_epoch=200, val_windows=16)
    dm.setup("fit")
    assert dm.split_offset == 8000
    assert all((b["input_ids"] == ord("a")).all() and (b["targets"] == ord("a")).all() for b in dm.train_dataloader())
    val = all_batches(dm.val_dataloader())
    assert (val["input_ids"] == ord("b")).all() and (val["targets"] == ord("b")).all()
    offsets = [dm._val.dataset.offset(i) for i in dm._val.indices]
    assert offsets[0] == 8000 and offsets[-1] == 10_000 - 65  # evenly spaced over the whole tail


def test_byte_text_max_bytes_caps_a_file(text_file):
    dm = ByteTextDataModule(path=str(text_file), seq_len=16, batch_size=2, max_bytes=1000, val_fraction=0.1)
    dm.setup("fit")
    assert dm.split_offset == 900


def test_byte_text_folder_is_concatenated_in_sorted_order(text_folder, cache_dir):
    dm = ByteTextDataModule(path=str(text_folder), seq_len=16, batch_size=2, max_bytes=None)
    dm.setup("fit")
    (cache,) = cache_dir.iterdir()
    expected = b"".join((text_folder / name).read_bytes() for name in ["a.md", "b.txt", "sub/c.py"])
    assert cache.read_bytes() == expected


def test_byte_text_cache_is_written_atomically_then_reused(text_folder, cache_dir, monkeypatch):
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((Path(src), Path(dst))), real_replace(src, dst)))
    ByteTextDataModule(path=str(text_folder), seq_len=16, batch_size=2).setup("fit")
    (cache,) = cache_dir.iterdir()  # no temporary file left behind
    ((src, dst),) = replaced
    assert dst == cache and src.parent == cache.parent and src != dst
    stamp = cache.stat().st_mtime_ns
    ByteTextDataModule(path=str(text_folder), seq_len=16, batch_size=2).setup("fit")
    assert len(replaced) == 1 and cache.stat().st_mtime_ns == stamp


def test_byte_text_cache_failure_leaves_nothing(text_folder, cache_dir, monkeypatch):
    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        ByteTextDataModule(path=str(text_folder), seq_len=16, batch_size=2).setup("fit")
    assert list(cache_dir.iterdir()) == []


def test_byte_text_cache_key_follows_file_changes(text_folder, cache_dir):
    key = lambda: byte_corpus.cache_key(byte_corpus.list_text_files(text_folder, byte_corpus.TEXT_SUFFIXES), None)
    before = key()
    assert key() == before
    (text_folder / "b.txt").write_text("changed contents")
    assert key() != before


def test_byte_text_default_corpus_is_the_stdlib(cache_dir):
    dm = ByteTextDataModule(seq_len=64, batch_size=2, max_bytes=200_000, val_windows=4)
    batch = first_batch(dm)
    assert batch["input_ids"].shape == (2, 64)
    (cache,) = cache_dir.iterdir()
    assert cache.stat().st_size == 200_000
    assert b"def " in cache.read_bytes()


def test_byte_text_encode_decode_round_trip():
    text = "héllo, wörld → ok"
    ids = ByteTextDataModule.encode(text)
    assert ids.dtype == torch.long and len(ids) == len(text.encode("utf-8"))
    assert ByteTextDataModule.decode(ids) == text
    assert ByteTextDataModule.decode([0xFF, ord("a")]) == "\ufffda"


def test_byte_text_dataset_pickles_without_the_corpus(text_file):
    dm = ByteTextDataModule(path=str(text_file), seq_len=16, batch_size=2)
    dm.setup("fit")
    dataset = dm._train
    _ = dataset[0]  # maps the file
    clone = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 2000
    assert torch.equal(clone[5]["input_ids"], dataset[5]["input_ids"])


@pytest.mark.parametrize(
    "bad",
    [{"seq_len": 0}, {"seq_len": -4}, {"val_fraction": 0.0}, {"val_fraction": 1.0}, {"val_fraction": 1.5},
     {"train_windows_per_epoch": 0}, {"val_windows": 0}, {"max_bytes": 0}, {"batch_size": 0}],
)
def test_byte_text_bad_arguments(bad, text_file):
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        ByteTextDataModule(path=str(text_file), **bad)


def test_byte_text_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        ByteTextDataModule(path=str(tmp_path / "nope.txt"))


def test_byte_text_corpus_shorter_than_a_window(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("short")
    with pytest.raises(ValueError, match="seq_len"):
        ByteTextDataModule(path=str(path), seq_len=16).setup("fit")


def test_byte_text_validation_split_shorter_than_a_window(text_file):
    with pytest.raises(ValueError, match="validation split"):
        ByteTextDataModule(path=str(text_file), seq_len=512, val_fraction=0.01).setup("fit")


def test_byte_text_folder_without_text_files(tmp_path, cache_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files matching"):
        ByteTextDataModule(path=str(tmp_path / "empty")).setup("fit")


# ----------------------------------------------------------------------------- Passkey


def test_passkey_batch_format():
    dm = PasskeyDataModule(seq_len=200, batch_size=3)
    batch = first_batch(dm)
    assert set(batch) == {"input_ids", "targets", "route_mask"}
    for key in ("input_ids", "targets"):
        assert batch[key].shape == (3, 200) and batch[key].dtype == torch.long
    assert batch["route_mask"].shape == (3, 200) and batch["route_mask"].dtype == torch.bool
    assert dm.vocab_size == 256


def test_passkey_route_mask_marks_the_needle_digits_and_the_answer_positions():
    dm = PasskeyDataModule(seq_len=200, batch_size=1)
    dm.setup("fit")
    item, sample = dm._train[0], dm._train.sample(0)
    marked = item["route_mask"].nonzero().flatten().tolist()
    needle_digits = [sample.depth + i for i, ch in enumerate(sample.text[sample.depth:sample.depth + 60])
                     if ch.isdigit()]
    assert marked == needle_digits + list(range(195, 200))


@pytest.mark.parametrize("key_digits", [1, 5, 9])
def test_passkey_targets_are_exactly_the_key_digits(key_digits):
    dm = PasskeyDataModule(seq_len=300, key_digits=key_digits, batch_size=4, val_samples=4)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    for i, (ids, targets) in enumerate(zip(batch["input_ids"], batch["targets"])):
        sample = dm._val.sample(i)
        scored = targets != -100
        assert scored.sum() == key_digits and scored[-key_digits:].all()
        assert dm.decode(targets[scored]) == sample.key and sample.key.isdigit()
        # The input ends with the answer prefix; the key itself appears earlier in the needle.
        text = dm.decode(ids)
        assert text.endswith("What is the pass key? The pass key is " + sample.key[:-1])
        assert f"The pass key is {sample.key}. Remember it." in text


def test_passkey_sample_is_seq_len_plus_one_bytes_with_needle_at_depth():
    sample = make_sample(seq_len=500, key_digits=5, seed=0, stream=0, index=3)
    assert len(sample.text.encode()) == 501
    assert sample.text[sample.depth:].startswith(f"The pass key is {sample.key}.")
    assert sample.text.endswith(f"The pass key is {sample.key}")


def test_passkey_depth_varies():
    depths = {make_sample(1000, 5, seed=0, stream=0, index=i).depth for i in range(40)}
    assert len(depths) > 10 and min(depths) < 300 and max(depths) > 600


def test_passkey_is_deterministic_per_seed():
    def val(seed):
        dm = PasskeyDataModule(seq_len=128, batch_size=4, val_samples=8, seed=seed)
        dm.setup("fit")
        return all_batches(dm.val_dataloader())

    assert_same_batches(val(0), val(0))
    assert not torch.equal(val(0)["input_ids"], val(1)["input_ids"])


def test_passkey_train_and_val_use_different_streams():
    dm = PasskeyDataModule(seq_len=128)
    dm.setup("fit")
    assert [dm._train.sample(i) for i in range(5)] != [dm._val.sample(i) for i in range(5)]


def test_passkey_train_sample_is_a_function_of_seed_and_index():
    a, b = PasskeyDataModule(seq_len=128, seed=4, train_samples=10), PasskeyDataModule(seq_len=128, seed=4, train_samples=50)
    a.setup("fit"), b.setup("fit")
    assert_same_batches(a._train[9], b._train[9])


@pytest.mark.parametrize("bad", [{"seq_len": 0}, {"seq_len": 50}, {"key_digits": 0}])
def test_passkey_bad_arguments(bad):
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        PasskeyDataModule(**bad)


def test_passkey_shortest_sequence_fits():
    shortest = min_seq_len(5)
    sample = make_sample(shortest, 5, seed=0, stream=0, index=0)
    assert len(sample.text) == shortest + 1 and sample.depth == 0


# ----------------------------------------------------------------------------- ListOps


@pytest.mark.parametrize(
    "text, value",
    [
        ("7", 7),
        ("[MAX 4 3 [MIN 2 3 ] 1 0 ]", 4),
        ("[MIN 4 3 [MAX 2 9 ] 1 5 ]", 1),
        ("[SM 9 8 7 ]", 4),
        ("[MED 5 1 3 ]", 3),
        ("[MED 4 1 3 2 ]", 2),  # even length: (2 + 3) / 2 truncated, as LRA
        ("[MED 9 0 ]", 4),
        ("[SM [MED 1 2 ] [MAX 9 ] [MIN 5 6 ] ]", 5),
    ],
)
def test_listops_evaluate_examples(text, value):
    assert evaluate(text) == value
    assert evaluate(tokenize(text)) == value


def test_listops_evaluate_accepts_padded_ids():
    ids = encode(tokenize("[SM 5 [MAX 1 7 ] ]")) + [0, 0, 0]
    assert evaluate(ids) == 2
    assert evaluate(torch.tensor(ids)) == 2


@pytest.mark.parametrize("text", ["", "[MAX 1 2", "[MAX 1 ] ]", "[ 1 2 ]", "[MAX ]", "MAX 1", "[MAX 1 ] 3", "[FOO 1 ]"])
def test_listops_evaluate_rejects_malformed(text):
    with pytest.raises(ValueError):
        evaluate(text)


def _reference_value(tree) -> int:
    if isinstance(tree, int):
        return tree
    op, args = tree
    values = [_reference_value(a) for a in args]
    if op == "MIN":
        return min(values)
    if op == "MAX":
        return max(values)
    if op == "SM":
        return sum(values) % 10
    return int(np.median(values))


def _reference_tokens(tree) -> list:
    if isinstance(tree, int):
        return [str(tree)]
    op, args = tree
    return ["[", op] + [t for a in args for t in _reference_tokens(a)] + ["]"]


trees = st.recursive(
    st.integers(0, 9),
    lambda children: st.tuples(st.sampled_from(OPERATORS), st.lists(children, min_size=1, max_size=6)),
    max_leaves=40,
)


@settings(max_examples=100, deadline=None)
@given(tree=trees)
def test_listops_evaluate_matches_a_recursive_reference(tree):
    tokens = _reference_tokens(tree)
    assert evaluate(tokens) == _reference_value(tree)
    assert tokenize(to_text(tokens)) == tokens


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), min_length=st.integers(4, 200), span=st.integers(0, 200),
       max_depth=st.integers(1, 12))
def test_listops_generator_respects_bounds(seed, min_length, span, max_depth):
    tokens = generate(np.random.default_rng(seed), min_length, min_length + span, max_depth)
    assert min_length <= len(tokens) <= min_length + span
    assert 1 <= depth(tokens) <= max_depth
    assert 0 <= evaluate(tokens) <= 9


def test_listops_generation_is_fast_at_full_length():
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(10):
        generate(rng, 500, 2000, 10)
    assert (time.perf_counter() - start) / 10 < 0.05


def test_listops_batch_format_and_labels():
    dm = ListOpsDataModule(min_length=20, max_length=60, max_depth=4, batch_size=8)
    batch = first_batch(dm)
    assert set(batch) == {"inputs", "mask", "label"}
    assert batch["inputs"].shape == (8, 60) and batch["inputs"].dtype == torch.long
    assert batch["mask"].shape == (8, 60) and batch["mask"].dtype == torch.bool
    assert batch["label"].shape == (8,) and batch["label"].dtype == torch.long
    for ids, mask, label in zip(batch["inputs"], batch["mask"], batch["label"]):
        length = int(mask.sum())
        assert 20 <= length <= 60 and mask[:length].all()
        assert (ids[~mask] == 0).all() and (ids[mask] != 0).all()
        assert evaluate(ids[mask]) == int(label)
    assert (dm.vocab_size, dm.num_classes, dm.seq_len) == (17, 10, 60)


def test_listops_is_deterministic_per_seed():
    def val(seed):
        dm = ListOpsDataModule(min_length=20, max_length=60, batch_size=4, val_samples=8, seed=seed)
        dm.setup("fit")
        return all_batches(dm.val_dataloader())

    assert_same_batches(val(0), val(0))
    assert not torch.equal(val(0)["inputs"], val(1)["inputs"])


def test_listops_labels_cover_several_classes():
    dm = ListOpsDataModule(min_length=20, max_length=100, val_samples=100, batch_size=100)
    labels = first_batch(dm, "val")["label"]
    assert len(labels.unique()) >= 5


@pytest.mark.parametrize(
    "bad, name",
    [({"min_length": 3}, "min_length"), ({"min_length": 0}, "min_length"),
     ({"min_length": 100, "max_length": 50}, "max_length"), ({"max_depth": 0}, "max_depth")],
)
def test_listops_bad_arguments(bad, name):
    with pytest.raises(ValueError, match=name):
        ListOpsDataModule(**bad)


# ----------------------------------------------------------------------------- Matching marks


def marks_val_batch(**kwargs) -> dict:
    kwargs = {"val_samples": 200, "batch_size": 200, **kwargs}
    return first_batch(MatchingMarksDataModule(**kwargs), "val")


@pytest.mark.parametrize("cls, num_classes, readout", [(MatchingMarksDataModule, 2, None), (MarkColourDataModule, 3, "corner")],
                         ids=["MatchingMarks", "MarkColour"])
def test_marks_on_noise_batch_format_and_what_the_model_is_told(cls, num_classes, readout):
    dm = cls(image_size=12, num_colors=3, min_distance=6, batch_size=2)
    batch = first_batch(dm)
    assert set(batch) == {"inputs", "label", "route_mask"}
    assert batch["inputs"].shape == (2, 3, 12, 12) and batch["inputs"].dtype == torch.float32
    assert batch["label"].shape == (2,) and batch["label"].dtype == torch.long
    assert batch["route_mask"].shape == (2, 144) and batch["route_mask"].dtype == torch.bool
    assert (dm.image_size, dm.in_channels, dm.num_classes, getattr(dm, "readout", None)) == (12, 3, num_classes, readout)


def test_matching_marks_route_mask_marks_two_pixels_far_apart():
    batch = marks_val_batch(image_size=16, min_distance=8)
    mask = batch["route_mask"].view(-1, 16, 16)
    assert (mask.flatten(1).sum(1) == 2).all()
    for sample in mask:
        (r0, c0), (r1, c1) = sample.nonzero().tolist()
        assert max(abs(r0 - r1), abs(c0 - c1)) >= 8


def test_matching_marks_label_says_whether_the_marked_colours_match():
    batch = marks_val_batch(noise=0.0, num_colors=5)
    for image, label, mask in zip(batch["inputs"], batch["label"], batch["route_mask"]):
        marks = image.flatten(1)[:, mask]  # (colours, 2): one-hot columns without noise
        assert torch.equal(marks.sum(0), torch.ones(2))
        colours = marks.argmax(0)
        assert int(label) == int(colours[0] == colours[1])
    assert 0.35 < batch["label"].float().mean() < 0.65


def test_matching_marks_no_single_colour_gives_away_the_label():
    batch = marks_val_batch(noise=0.0, num_colors=4, val_samples=2000, batch_size=2000)
    first_mark_colour = batch["inputs"].flatten(2)[batch["route_mask"].unsqueeze(1).expand(-1, 4, -1)]
    first_mark_colour = first_mark_colour.view(-1, 4, 2)[:, :, 0].argmax(1)
    for colour in range(4):
        share = batch["label"][first_mark_colour == colour].float().mean()
        assert abs(share - 0.5) < 0.1


@pytest.mark.parametrize(
    "bad, name",
    [({"image_size": 1}, "image_size"), ({"num_colors": 1}, "num_colors"), ({"min_distance": 16}, "min_distance"),
     ({"min_distance": 0}, "min_distance"), ({"noise": -0.1}, "noise"), ({"noise": float("nan")}, "noise"),
     ({"noise": float("inf")}, "noise")],
)
@pytest.mark.parametrize("cls", [MatchingMarksDataModule, MarkColourDataModule], ids=lambda c: c.__name__)
def test_marks_on_noise_bad_arguments(cls, bad, name):
    with pytest.raises(ValueError, match=name):
        cls(**bad)


# sample 0 of each stream with the defaults (seed 0), as the runs of docs/RESULTS.md section 4 drew
# them: (label, marked pixels, sum of the map, sum of its absolute values)
PINNED_SAMPLES = {
    MatchingMarksDataModule: [(1, [20, 158], -9.0587, 329.7674), (1, [107, 252], -2.1289, 327.2011)],
    MarkColourDataModule: [(6, [0, 161], -10.0587, 328.9043), (7, [0, 127], -3.1289, 326.3662)],
}


@pytest.mark.parametrize("cls", list(PINNED_SAMPLES), ids=lambda c: c.__name__)
def test_marks_on_noise_samples_stay_the_ones_the_recorded_runs_trained_on(cls):
    dm = cls()
    dm.setup("fit")
    for dataset, (label, marked, total, total_abs) in zip((dm._train, dm._val), PINNED_SAMPLES[cls]):
        sample = dataset[0]
        assert int(sample["label"]) == label
        assert sample["route_mask"].nonzero().flatten().tolist() == marked
        assert float(sample["inputs"].sum()) == pytest.approx(total, abs=1e-3)
        assert float(sample["inputs"].abs().sum()) == pytest.approx(total_abs, abs=1e-3)


# ----------------------------------------------------------------------------- Mark colour


def colour_val_batch(**kwargs) -> dict:
    kwargs = {"val_samples": 200, "batch_size": 200, **kwargs}
    return first_batch(MarkColourDataModule(**kwargs), "val")


@pytest.mark.parametrize("min_distance", [1, 8, 15])
def test_mark_colour_route_mask_is_the_corner_and_one_pixel_far_from_it(min_distance):
    mask = colour_val_batch(image_size=16, min_distance=min_distance)["route_mask"].view(-1, 16, 16)
    assert mask[:, 0, 0].all() and (mask.flatten(1).sum(1) == 2).all()
    for sample in mask:
        sample[0, 0] = False
        ((row, col),) = sample.nonzero().tolist()
        assert max(row, col) >= min_distance


def test_mark_colour_label_is_the_colour_of_the_marked_pixel():
    batch = colour_val_batch(noise=0.0, num_colors=5)
    for image, label, mask in zip(batch["inputs"], batch["label"], batch["route_mask"]):
        pixels = image.flatten(1)
        assert pixels.abs().sum() == 1  # one mark, nothing else without noise
        mark = pixels[:, mask].sum(1)  # the corner holds nothing
        assert int(mark.argmax()) == int(label) and float(mark.max()) == 1.0
    assert set(batch["label"].tolist()) == set(range(5))


# ----------------------------------------------------------------------------- Pathfinder


@pytest.mark.parametrize("image_size", [32, 64, 128])
def test_pathfinder_batch_format(image_size):
    dm = PathfinderDataModule(image_size=image_size, batch_size=2)
    batch = first_batch(dm)
    assert set(batch) == {"inputs", "label"}
    assert batch["inputs"].shape == (2, 1, image_size, image_size) and batch["inputs"].dtype == torch.float32
    assert batch["label"].shape == (2,) and batch["label"].dtype == torch.long
    assert (dm.image_size, dm.in_channels, dm.num_classes) == (image_size, 1, 2)


def test_pathfinder_images_in_unit_range_with_both_labels():
    dm = PathfinderDataModule(val_samples=40, batch_size=40)
    batch = first_batch(dm, "val")
    images = batch["inputs"]
    assert images.min() >= 0 and images.max() <= 1
    assert ((images > 0).flatten(1).sum(1) > 20).all()  # every image has dots and paths
    assert set(batch["label"].tolist()) == {0, 1}


def test_pathfinder_ink_does_not_give_away_the_label():
    dm = PathfinderDataModule(val_samples=200, batch_size=200)
    batch = first_batch(dm, "val")
    ink = (batch["inputs"] > 0).flatten(1).float().mean(1)
    positive, negative = ink[batch["label"] == 1].mean(), ink[batch["label"] == 0].mean()
    assert abs(positive - negative) < 0.1 * ink.mean()


@pytest.mark.parametrize("cls", [PathfinderDataModule, MatchingMarksDataModule], ids=lambda c: c.__name__)
def test_generated_maps_are_deterministic_per_seed(cls):
    def val(seed):
        dm = cls(val_samples=6, batch_size=3, seed=seed)
        dm.setup("fit")
        return all_batches(dm.val_dataloader())

    assert_same_batches(val(0), val(0))
    assert not torch.equal(val(0)["inputs"], val(1)["inputs"])


def test_pathfinder_without_distractors():
    batch = first_batch(PathfinderDataModule(num_distractors=0, batch_size=4))
    assert batch["inputs"].shape == (4, 1, 32, 32)


@pytest.mark.parametrize(
    "bad",
    [{"image_size": 48}, {"image_size": 0}, {"dash_length": 0}, {"dash_length": 5}, {"num_distractors": -1}],
)
def test_pathfinder_bad_arguments(bad):
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        PathfinderDataModule(**bad)


# ----------------------------------------------------------------------------- FeatureMaps


def _maps(n=20, c=3, h=4, w=4, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c, h, w)).astype(np.float32), rng.permutation(np.arange(n) % classes).astype(np.int64)


@pytest.mark.parametrize("fmt", ["npz", "pt", "npz_channel_last"])
def test_feature_maps_load_formats(fmt, tmp_path):
    x, y = _maps()
    path = tmp_path / ("maps.pt" if fmt == "pt" else "maps.npz")
    if fmt == "npz":
        np.savez(path, x=x, y=y)
    elif fmt == "pt":
        torch.save({"x": torch.from_numpy(x).double(), "y": torch.from_numpy(y)}, path)
    else:
        np.savez(path, x=x.transpose(0, 2, 3, 1), y=y)
    dm = FeatureMapDataModule(path=str(path), batch_size=4, channel_first=fmt != "npz_channel_last")
    batch = first_batch(dm, "val")
    assert set(batch) == {"inputs", "label"}
    assert batch["inputs"].shape == (2, 3, 4, 4) and batch["inputs"].dtype == torch.float32
    assert batch["label"].dtype == torch.long and batch["label"].shape == (2,)
    for index, inputs, label in zip(dm._val.indices, batch["inputs"], batch["label"]):
        assert torch.allclose(inputs, torch.from_numpy(x[int(index)])) and int(label) == y[int(index)]
    assert (dm.image_size, dm.in_channels, dm.num_classes) == (4, 3, 5)


def test_feature_maps_split_is_seeded_and_disjoint(tmp_path):
    x, y = _maps(n=30)
    np.savez(tmp_path / "m.npz", x=x, y=y)
    split = lambda seed: (lambda dm: (dm.setup("fit"), dm)[1])(
        FeatureMapDataModule(path=str(tmp_path / "m.npz"), val_fraction=0.2, seed=seed))
    a, b, c = split(0), split(0), split(1)
    val, train = set(a._val.indices.tolist()), set(a._train.indices.tolist())
    assert len(val) == 6 and len(train) == 24 and val | train == set(range(30))
    assert val == set(b._val.indices.tolist()) and val != set(c._val.indices.tolist())
    assert_same_batches(all_batches(a.val_dataloader()), all_batches(b.val_dataloader()))


def test_feature_maps_non_square_and_num_classes_override(tmp_path):
    x, y = _maps(h=4, w=6)
    np.savez(tmp_path / "m.npz", x=x, y=y)
    dm = FeatureMapDataModule(path=str(tmp_path / "m.npz"), num_classes=8)
    assert (dm.height, dm.width, dm.num_classes) == (4, 6, 8)
    with pytest.raises(ValueError, match="height and width"):
        _ = dm.image_size


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x": np.zeros((4, 1, 2, 2), np.float32)}, "'y'"),
        ({"x": np.zeros((4, 2, 2), np.float32), "y": np.zeros(4, np.int64)}, "x must have shape"),
        ({"x": np.zeros((4, 1, 2, 2), np.int64), "y": np.zeros(4, np.int64)}, "floating-point"),
        ({"x": np.zeros((4, 1, 2, 2), np.float32), "y": np.zeros(4, np.float32)}, "integer"),
        ({"x": np.zeros((4, 1, 2, 2), np.float32), "y": np.zeros(3, np.int64)}, "same length"),
        ({"x": np.zeros((4, 1, 2, 2), np.float32), "y": -np.ones(4, np.int64)}, "non-negative"),
        ({"x": np.zeros((1, 1, 2, 2), np.float32), "y": np.zeros(1, np.int64)}, "at least 2"),
    ],
)
def test_feature_maps_bad_contents(arrays, match, tmp_path):
    dm = FeatureMapDataModule(path=_write_npz(tmp_path / "m.npz", **arrays))
    with pytest.raises(ValueError, match=match):
        dm.setup("fit")


def test_feature_maps_pt_must_hold_a_dict(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="dict"):
        FeatureMapDataModule(path=str(tmp_path / "m.pt")).setup("fit")


def test_feature_maps_num_classes_must_cover_labels(tmp_path):
    x, y = _maps(classes=5)
    dm = FeatureMapDataModule(path=_write_npz(tmp_path / "m.npz", x=x, y=y), num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        dm.setup("fit")


def test_feature_maps_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        FeatureMapDataModule(path=str(tmp_path / "absent.npz"))


@pytest.mark.parametrize("bad, name", [({"val_fraction": 0.0}, "val_fraction"), ({"val_fraction": 1.0}, "val_fraction"),
                                       ({"num_classes": 0}, "num_classes"), ({"batch_size": -1}, "batch_size")])
def test_feature_maps_bad_arguments(bad, name, tmp_path):
    x, y = _maps()
    with pytest.raises(ValueError, match=name):
        FeatureMapDataModule(path=_write_npz(tmp_path / "m.npz", x=x, y=y), **bad)


def test_feature_maps_wrong_suffix(tmp_path):
    (tmp_path / "m.csv").write_text("1,2")
    with pytest.raises(ValueError, match="path"):
        FeatureMapDataModule(path=str(tmp_path / "m.csv"))


def test_epoch_shuffle_gives_the_order_of_a_seeded_shuffling_loader():
    from torch.utils.data import DataLoader
    from colt5_lightning.data._base import EpochShuffle
    loader = DataLoader(list(range(20)), batch_size=20, shuffle=True, generator=torch.Generator().manual_seed(7))
    sampler = EpochShuffle(20, 7)
    for epoch in range(3):
        assert torch.cat(list(loader)).tolist() == sampler.indices_for_epoch(epoch).tolist()


def test_a_resumable_sampler_skips_only_the_start_of_its_next_pass():
    from colt5_lightning.data._base import EpochShuffle
    sampler = EpochShuffle(10, 3)
    full = list(sampler.indices_for_epoch(0).tolist())
    sampler.skip = 4
    assert list(sampler) == full[4:] and len(sampler) == 10
    sampler.set_epoch(0)
    assert list(sampler) == full


@settings(max_examples=40, deadline=None)
@given(total=st.integers(1, 40), replicas=st.integers(1, 4), epoch=st.integers(0, 3))
@example(total=1, replicas=3, epoch=0)  # fewer samples than processes: padded by repeating more than once
def test_the_shards_of_a_resumable_sampler_cover_its_epoch_in_equal_parts(total, replicas, epoch):
    from colt5_lightning.data._base import EpochShuffle
    order = EpochShuffle(total, 5).indices_for_epoch(epoch).tolist()
    shards = []
    for rank in range(replicas):
        sampler = EpochShuffle(total, 5)
        sampler.shard(replicas, rank)
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler) == -(-total // replicas)
    dealt = [shards[i % replicas][i // replicas] for i in range(len(shards[0]) * replicas)]
    assert dealt == (order * replicas)[:len(dealt)]  # dealt round-robin, padded from the start


def test_a_sharded_sampler_skips_the_start_of_its_own_shard():
    from colt5_lightning.data._base import EpochShuffle
    sampler = EpochShuffle(12, 3)
    sampler.shard(3, 1)
    shard = list(sampler)
    sampler.set_epoch(0)
    sampler.skip = 2
    assert list(sampler) == shard[2:]


def test_lightning_leaves_the_resumable_sampler_unwrapped_under_data_parallelism():
    from torch.utils.data import DistributedSampler
    from colt5_lightning.data._base import EpochShuffle
    assert isinstance(EpochShuffle(4, 0), DistributedSampler)
