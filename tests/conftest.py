"""Shared test setup: every test starts from the same seed, on one CPU thread.

The tensors here are tiny; with two OpenMP threads on a busy 2-core machine a tiny op can
take 100x longer (seen: one Sinkhorn call 7 s instead of 0.035 s)."""
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
