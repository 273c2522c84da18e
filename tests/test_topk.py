"""topk: colt5-attention's differentiable top-k (same signature and return fields)."""
import pytest
import torch

from colt5_lightning import coor_descent, topk


def test_forward_is_torch_topk_with_unit_gates():
    x = torch.randn(4, 32)
    got = topk(x, 5)
    expected = torch.topk(x, 5, dim=-1)
    torch.testing.assert_close(got.values, expected.values)
    torch.testing.assert_close(got.indices, expected.indices)
    assert torch.equal(got.gates, torch.ones_like(got.gates))


def test_the_gradient_flows_through_the_soft_top_k_weights():
    x = torch.randn(2, 32, requires_grad=True)
    got = topk(x, 4, eps=1.0)  # a large eps: no weight saturates at 1, where the gradient would stop
    got.values.sum().backward()
    weights = coor_descent(x.detach(), k=4 * 9 / 8, n_iters=20, eps=1.0)
    torch.testing.assert_close(got.coor_descent_values, weights.gather(-1, got.indices))
    unselected = torch.ones_like(x, dtype=torch.bool).scatter(-1, got.indices, False)
    assert x.grad[unselected].abs().sum() > 0  # the soft weights tie every score to the selected values


def test_non_differentiable_is_plain_topk():
    x = torch.randn(2, 16)
    got = topk(x, 3, non_differentiable=True)
    assert got.coor_descent_values is None and got.gates is None
    torch.testing.assert_close(got.values, torch.topk(x, 3).values)


@pytest.mark.parametrize("kwargs, match", [(dict(k=0), "k must be a positive int"),
                                           (dict(k=2, coor_descent_k_ratio=0.5), "coor_descent_k_ratio")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        topk(torch.randn(2, 8), **kwargs)


def test_coor_descent_takes_colt5_attentions_default_eps():
    s = torch.randn(2, 16)
    torch.testing.assert_close(coor_descent(s, k=3, n_iters=20), coor_descent(s, k=3, n_iters=20, eps=0.1))
