"""route_supervision: routers taught to score the data's route_mask tokens highest."""
import pytest
import torch

from colt5_lightning.data import MatchingMarksDataModule
from colt5_lightning.models import RoutingConfig
from colt5_lightning.routing.loss_guidance import recording_router_scores
from colt5_lightning.training import ImageClassificationModule

ROUTING = RoutingConfig(light_heads=2, light_dim_head=8, heavy_heads=2, heavy_dim_head=8, light_window_size=4,
                        num_heavy_attn_tokens_q=4, num_heavy_attn_tokens_kv=4, num_heavy_ff_tokens=4)


def marks_batch() -> dict:
    data = MatchingMarksDataModule(image_size=8, num_colors=3, min_distance=4, batch_size=8, val_samples=8)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def module(weight: float) -> ImageClassificationModule:
    return ImageClassificationModule(image_size=8, in_channels=3, num_classes=2, dim=16, depth=1, routing=ROUTING,
                                     route_supervision=weight)


def mass_on_the_marks(model, batch) -> torch.Tensor:
    """(routers,) mean softmax(score) share of each router on the marked pixels."""
    with recording_router_scores(model.model) as recorded:
        model(batch["inputs"])
    scores = recorded.readers + recorded.memories
    return torch.stack([(s.softmax(-1)[:, 0] * batch["route_mask"]).sum(-1).mean() for s in scores])


def test_supervised_routers_learn_to_score_the_marks_highest():
    torch.manual_seed(0)
    model, batch = module(1.0), marks_batch()
    before = mass_on_the_marks(model, batch)
    assert len(before) == 3  # the query, key/value and feed-forward routers of the block
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(100):
        loss, _ = model._step(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (mass_on_the_marks(model, batch) > 3 * before).all()  # 2 of 64 pixels: 0.03 at random


def test_route_supervision_needs_batches_that_mark_the_evidence():
    batch = marks_batch()
    del batch["route_mask"]
    with pytest.raises(ValueError, match="route_supervision needs batches with a 'route_mask'"):
        module(1.0).train()._step(batch)


def test_without_supervision_the_loss_is_the_classification_loss_alone():
    torch.manual_seed(0)
    model, batch = module(0.0).train(), marks_batch()
    loss, logits = model._step(batch)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, batch["label"]))
