"""Diffusion with a routed denoiser: the schedule, the denoiser, the sampler and that it learns."""
import pytest
import torch

from colt5_lightning.models import CoLT5ImageDenoiser, RoutingConfig
from colt5_lightning.training import DiffusionModule
from colt5_lightning.training.diffusion_module import cosine_alpha_bars, ddim_steps

ROUTING = RoutingConfig(light_heads=2, light_dim_head=8, heavy_heads=2, heavy_dim_head=8, light_window_size=4,
                        num_heavy_attn_tokens_q=8, num_heavy_attn_tokens_kv=8, num_heavy_ff_tokens=8)
TINY = dict(image_size=16, in_channels=1, patch_size=2, dim=16, depth=1, routing=ROUTING, diffusion_steps=100,
            num_samples=0)


def test_the_cosine_schedule_keeps_less_of_the_image_at_every_step():
    alpha_bars = cosine_alpha_bars(1000)
    assert alpha_bars.shape == (1000,)
    assert (alpha_bars.diff() < 0).all()
    assert 0.999 < alpha_bars[0] < 1 and 0 < alpha_bars[-1] < 1e-4


@pytest.mark.parametrize("total, visits", [(1000, 50), (100, 100), (10, 1)])
def test_ddim_visits_distinct_steps_from_the_last_down(total, visits):
    path = ddim_steps(total, visits)
    assert len(path) == visits and path == sorted(set(path), reverse=True)
    assert path[0] == (total - 1 if visits > 1 else 0) and path[-1] == 0


@pytest.mark.parametrize("dense", [False, True])
def test_the_denoiser_returns_one_value_per_pixel_and_depends_on_the_step(dense):
    torch.manual_seed(0)
    model = CoLT5ImageDenoiser(16, 3, 2, 16, 1, routing=ROUTING, dense=dense)
    torch.nn.init.normal_(model.to_pixels.weight)  # zero at init: it starts by predicting no noise
    x = torch.randn(2, 3, 16, 16)
    out = model(x, torch.tensor([0, 0]))
    assert out.shape == x.shape
    assert not torch.allclose(out, model(x, torch.tensor([50, 50])))


def test_the_denoiser_names_a_wrong_step_shape():
    with pytest.raises(ValueError, match="steps must be a"):
        CoLT5ImageDenoiser(16, 1, 2, 16, 1, routing=ROUTING)(torch.randn(2, 1, 16, 16), torch.tensor(3))


def test_ddim_with_a_denoiser_that_knows_the_image_returns_that_image():
    module = DiffusionModule(**TINY)
    target = torch.rand(1, 1, 16, 16) * 2 - 1

    class KnowsTheImage(torch.nn.Module):
        def forward(self, x, steps):
            alpha_bar = module.alpha_bars[steps].view(-1, 1, 1, 1)
            return (x - alpha_bar.sqrt() * target) / (1 - alpha_bar).sqrt()

    module.model = KnowsTheImage()
    torch.testing.assert_close(module.sample(3, sample_steps=5), ((target + 1) / 2).expand(3, 1, 16, 16),
                               atol=1e-5, rtol=1e-5)


def test_samples_lie_in_the_unit_range_and_repeat_with_their_seed():
    module = DiffusionModule(**TINY)
    torch.nn.init.normal_(module.model.to_pixels.weight)
    first = module.sample(2, sample_steps=3, seed=1)
    assert first.shape == (2, 1, 16, 16) and first.min() >= 0 and first.max() <= 1
    torch.testing.assert_close(module.sample(2, sample_steps=3, seed=1), first)
    assert not torch.allclose(module.sample(2, sample_steps=3, seed=2), first)


def test_the_validation_loss_uses_the_same_noise_every_time():
    module = DiffusionModule(**TINY)
    batch = {"inputs": torch.rand(4, 1, 16, 16)}
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert module._loss(batch, generator()) == module._loss(batch, generator())


def test_the_denoiser_learns_to_predict_the_noise_of_a_fixed_set_of_images():
    torch.manual_seed(0)
    module = DiffusionModule(**TINY)
    images = (torch.rand(8, 1, 16, 16) > 0.8).float()
    batch = {"inputs": images}
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    held_out = lambda: module._loss(batch, torch.Generator().manual_seed(0)).item()  # noqa: E731
    before = held_out()
    for _ in range(60):
        loss = module._loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert held_out() < 0.8 * before
