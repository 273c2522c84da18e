"""CoordinateDescentRouter: colt5-attention's router surface (constructor, RouterReturn, route_back)."""
import pytest
import torch

from colt5_lightning import CoordinateDescentRouter
from colt5_lightning.routing import RouterReturn

DIM = 16


@pytest.mark.parametrize("masked", [False, True])
def test_one_route_returns_k_positions_without_a_route_dimension(masked):
    router = CoordinateDescentRouter(DIM).eval()
    x = torch.randn(2, 40, DIM)
    mask = torch.rand(2, 40) > 0.2 if masked else None
    out = router(x, num_tokens=8, mask=mask)
    assert isinstance(out, RouterReturn)
    assert out.indices.shape == out.scores.shape == (2, 8) and out.routed_tokens.shape == (2, 8, DIM)
    assert (out.routed_mask is None) == (not masked)
    torch.testing.assert_close(out.routed_tokens, x[torch.arange(2).unsqueeze(-1), out.indices])
    if masked:
        assert mask.gather(1, out.indices).all()


def test_straight_through_scores_are_one_in_the_forward_pass_and_carry_a_gradient():
    router = CoordinateDescentRouter(DIM)
    out = router(torch.randn(2, 40, DIM), num_tokens=8)
    assert torch.equal(out.scores, torch.ones_like(out.scores))
    (out.scores * torch.randn_like(out.scores)).sum().backward()
    assert router.routing_tokens.grad.abs().sum() > 0


def test_several_routes_keep_their_dimension():
    out = CoordinateDescentRouter(DIM, num_routing_tokens=3)(torch.randn(2, 40, DIM), num_tokens=8)
    assert out.indices.shape == (2, 3, 8) and out.routed_tokens.shape == (2, 3, 8, DIM)


def test_an_input_no_longer_than_k_is_not_routed():
    x = torch.randn(2, 6, DIM)
    out = CoordinateDescentRouter(DIM)(x, num_tokens=8)
    assert out.indices is None and torch.equal(out.scores, torch.ones(2, 6)) and out.routed_tokens is x


def test_route_back_writes_the_routed_tokens_in_place():
    router = CoordinateDescentRouter(DIM).eval()
    x = torch.randn(2, 40, DIM)
    out = router(x, num_tokens=8)
    back = router.route_back(torch.zeros_like(x), out.routed_tokens * 2, out.indices)
    routed = torch.zeros(2, 40, dtype=torch.bool).scatter(1, out.indices, True)
    torch.testing.assert_close(back[routed], 2 * x[routed])
    assert (back[~routed] == 0).all()


def test_random_route_ignores_the_learned_scores():
    torch.manual_seed(0)
    router = CoordinateDescentRouter(DIM).eval()
    x = torch.randn(1, 64, DIM)
    learned = router(x, num_tokens=8).indices
    assert not all(torch.equal(router(x, num_tokens=8, random_route=True).indices.sort().values,
                               learned.sort().values) for _ in range(3))


def test_cosine_sim_routing_scores_are_bounded_by_the_scale():
    router = CoordinateDescentRouter(DIM, cosine_sim_routing=True, cosine_sim_scale=4.0)
    scores = router.score(torch.randn(2, 40, DIM) * 100)
    assert scores.abs().max() <= 4.0 + 1e-4


def test_route_block_size_routes_the_same_count_from_every_whole_block():
    router = CoordinateDescentRouter(DIM, route_block_size=8).eval()
    out = router(torch.randn(2, 35, DIM), num_tokens=8)  # 4 whole blocks of 8, 2 each; 3 tokens never routed
    assert out.indices.shape == (2, 8)
    assert torch.equal(torch.bincount(out.indices.flatten() // 8), torch.full((4,), 4))


def test_route_block_size_that_cannot_hold_its_share_is_an_error():
    with pytest.raises(ValueError, match="route_block_size 4 cannot route num_tokens 9"):
        CoordinateDescentRouter(DIM, route_block_size=4)(torch.randn(1, 10, DIM), num_tokens=9)


def test_learned_routing_tokens_route_each_sample_by_its_own_token():
    router = CoordinateDescentRouter(DIM, learned_routing_tokens=True).eval()
    x = torch.randn(1, 20, DIM).expand(2, 20, DIM)
    tokens = torch.stack([x[0, 3], x[0, 11]]) * 10  # each sample's token points at another position
    out = router(x, num_tokens=1, routing_tokens=tokens)
    assert out.indices.flatten().tolist() == [3, 11]


@pytest.mark.parametrize("given", [False, True])
def test_routing_tokens_are_required_exactly_when_the_router_has_none(given):
    router = CoordinateDescentRouter(DIM, learned_routing_tokens=not given)
    with pytest.raises(ValueError, match="routing_tokens"):
        router(torch.randn(2, 20, DIM), num_tokens=4, routing_tokens=torch.randn(2, DIM) if given else None)
