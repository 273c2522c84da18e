"""Loss-guided routing: query and feed-forward routers learn to rank positions by next-token loss."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from colt5_lightning.routing.loss_guidance import loss_guided_routing_loss, recording_router_scores, token_surprise
from colt5_lightning.models import RoutingConfig
from colt5_lightning.training import LanguageModelModule

TINY = dict(dim=32, depth=2, sample_length=0,
            routing=RoutingConfig(num_heavy_attn_tokens_q=8, num_heavy_attn_tokens_kv=8, num_heavy_ff_tokens=8,
                                  light_dim_head=8, light_heads=2, light_window_size=8, heavy_dim_head=8,
                                  heavy_heads=2))


def passkey_like_batch(b=4, n=32, answer=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (b, n + 1), generator=g)
    targets = torch.full((b, n), -100)
    targets[:, -answer:] = ids[:, -answer:]
    return {"input_ids": ids[:, :-1], "targets": targets}


def ones(b, n):
    return torch.ones(b, n, dtype=torch.bool)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), position=st.integers(0, 15))
def test_raising_the_score_of_the_only_scored_position_lowers_the_loss(seed, position):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(1, 1, 16, generator=g)
    scored = torch.zeros(1, 16, dtype=torch.bool)
    scored[0, position] = True
    token_loss = torch.rand(1, 16, generator=g) * 3
    before = loss_guided_routing_loss(scores, token_loss, scored, ones(1, 16))
    scores[0, 0, position] += 1.0
    assert loss_guided_routing_loss(scores, token_loss, scored, ones(1, 16)) < before


def test_the_target_favours_the_position_with_the_higher_loss():
    scored = ones(1, 4)
    token_loss = torch.tensor([[0.1, 0.1, 3.0, 0.1]])
    toward_hard = torch.tensor([[[0.0, 0.0, 2.0, 0.0]]])
    toward_easy = torch.tensor([[[2.0, 0.0, 0.0, 0.0]]])
    assert (loss_guided_routing_loss(toward_hard, token_loss, scored, scored)
            < loss_guided_routing_loss(toward_easy, token_loss, scored, scored))


def test_samples_without_scored_or_valid_positions_add_nothing_and_stay_finite():
    scores = torch.randn(2, 1, 8, requires_grad=True)
    token_loss = torch.rand(2, 8)
    scored = torch.zeros(2, 8, dtype=torch.bool)
    scored[0, 3] = True
    valid = ones(2, 8)
    valid[0, 5:] = False  # padding
    loss = loss_guided_routing_loss(scores, token_loss, scored, valid)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(scores.grad).all()
    assert scores.grad[1].abs().sum() == 0  # the sample with nothing scored
    assert scores.grad[0, 0, 5:].abs().sum() == 0  # padded positions
    alone = loss_guided_routing_loss(scores[:1], token_loss[:1], scored[:1], valid[:1])
    assert torch.allclose(loss, alone)


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature"):
        loss_guided_routing_loss(torch.zeros(1, 1, 4), torch.zeros(1, 4), ones(1, 4), ones(1, 4), temperature=0)


def test_readers_and_memories_are_recorded_apart():
    module = LanguageModelModule(seq_len=32, **TINY)
    with recording_router_scores(module.model) as recorded:
        module.model(torch.randint(0, 256, (2, 32)))
    assert len(recorded.readers) == 2 * TINY["depth"]  # per layer: the query router and the FF router
    assert len(recorded.memories) == TINY["depth"]  # per layer: the key/value router
    assert all(s.shape == (2, 1, 32) for s in recorded.readers + recorded.memories)
    with recording_router_scores(module.model) as after:
        pass
    module.model(torch.randint(0, 256, (2, 32)))
    assert after.readers == [] and after.memories == []  # the hooks are gone


def test_surprise_is_the_negative_log_likelihood_of_each_token_given_the_ones_before():
    logits = torch.randn(2, 6, 11)
    ids = torch.randint(0, 11, (2, 6))
    surprise = token_surprise(logits, ids)
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1),
                                                 reduction="none").view(2, 5)
    torch.testing.assert_close(surprise[:, 1:], expected)
    assert (surprise[:, 0] == 0).all()


def test_the_guidance_trains_only_the_routers_vectors():
    module = LanguageModelModule(seq_len=32, **TINY, loss_guided_routing=1.0).train()
    _, _, _, guidance = module._loss(passkey_like_batch())
    names = [name for name, _ in module.named_parameters()]
    grads = torch.autograd.grad(guidance, list(module.parameters()), allow_unused=True)
    reached = {name for name, grad in zip(names, grads) if grad is not None and grad.abs().sum() > 0}
    assert reached and all(name.endswith("routing_tokens") for name in reached)
    assert {name.split(".")[-2] for name in reached} == {"q_router", "kv_router", "router"}


def test_training_step_adds_the_weighted_guidance():
    batch = passkey_like_batch()
    torch.manual_seed(0)
    module = LanguageModelModule(seq_len=32, **TINY, loss_guided_routing=0.5).train()
    module.log = lambda *args, **kwargs: None
    torch.manual_seed(1)
    total = module.training_step(batch, 0)
    torch.manual_seed(1)
    loss, _, _, guidance = module._loss(batch)
    assert torch.allclose(total, loss + 0.5 * guidance)


@pytest.mark.parametrize("ablation", [dict(dense=True), dict(routing=TINY["routing"].replace(heavy=False))],
                         ids=["dense", "light_only"])
def test_models_without_routers_ignore_the_guidance(ablation):
    module = LanguageModelModule(seq_len=32, **{**TINY, **ablation}, loss_guided_routing=1.0).train()
    loss, _, _, guidance = module._loss(passkey_like_batch())
    assert guidance is None and torch.isfinite(loss)


def test_guided_query_routers_learn_to_rank_the_scored_positions_first():
    torch.manual_seed(0)
    module = LanguageModelModule(seq_len=32, **TINY, loss_guided_routing=1.0).train()
    batch = passkey_like_batch(b=8)
    batch["input_ids"][:, -6:] = torch.arange(48, 54)  # the answer region has its own bytes
    routing_tokens = [p for n, p in module.named_parameters() if n.endswith("routing_tokens")]
    optimizer = torch.optim.Adam(routing_tokens, lr=0.05)
    for _ in range(60):
        _, _, _, guidance = module._loss(batch)
        optimizer.zero_grad()
        guidance.backward()
        optimizer.step()
    with recording_router_scores(module.model) as recorded:
        module.model(batch["input_ids"])
    first_query_router = recorded.readers[0][:, 0]  # (b, n)
    top5 = first_query_router.topk(5, dim=-1).indices
    assert (top5 >= 32 - 5).float().mean() > 0.9


def test_an_oracle_warm_start_is_released_after_its_steps():
    from types import SimpleNamespace
    module = LanguageModelModule(seq_len=32, **TINY, oracle_routing=True, oracle_steps=3)
    module._trainer = SimpleNamespace(global_step=2)
    assert module._oracle_now() is True
    module._trainer = SimpleNamespace(global_step=3)
    assert module._oracle_now() is False


def test_oracle_steps_must_be_positive():
    with pytest.raises(ValueError, match="oracle_steps"):
        LanguageModelModule(seq_len=32, **TINY, oracle_routing=True, oracle_steps=0)
