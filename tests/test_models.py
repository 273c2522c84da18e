"""Models: shapes, causality, generation, the dense switch and argument checks (tiny, CPU)."""
import pytest
import torch

from colt5_lightning.layers import ConditionalRoutedTransformerBlock, DenseTransformerBlock
from colt5_lightning.models import (CoLT5Encoder, CoLT5ImageClassifier, CoLT5LanguageModel,
                                    CoLT5SequenceClassifier, RoutingConfig)
from colt5_lightning.routing import ROUTER_TYPES, Router
from colt5_lightning.routing.causal import CausalRouter

ROUTING = RoutingConfig(num_heavy_attn_tokens_q=8, num_heavy_attn_tokens_kv=8, num_heavy_ff_tokens=8,
                        light_dim_head=8, light_heads=2, light_window_size=8, heavy_dim_head=8, heavy_heads=2)
TINY = dict(dim=32, depth=2, routing=ROUTING)
IMAGE = dict(dim=32, depth=2, routing=ROUTING.replace(light_window_size=4))
VARIANTS = [dict(routing=ROUTING.replace(router_type=t)) for t in ROUTER_TYPES] + [dict(dense=True)]
VARIANT_IDS = list(ROUTER_TYPES) + ["dense"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny ops run fastest on one thread; extra threads only spin on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def lm(**kwargs):
    torch.manual_seed(0)
    return CoLT5LanguageModel(vocab_size=64, max_seq_len=32, **{**TINY, **kwargs})


def routers(module):
    return [m for m in module.modules() if isinstance(m, (Router, CausalRouter))]


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_lm_logits_shape(variant):
    model = lm(**variant)
    assert model(torch.randint(0, 64, (3, 32))).shape == (3, 32, 64)
    assert model(torch.randint(0, 64, (3, 13))).shape == (3, 13, 64)  # shorter than max_seq_len


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_lm_is_causal(variant, train):
    model = lm(**variant).train(train)
    ids = torch.randint(0, 64, (2, 32))
    base = model(ids)
    for t in (3, 9, 17, 26):  # inside the first segment, and at/after segment borders
        changed = ids.clone()
        changed[:, t + 1:] = torch.randint(0, 64, changed[:, t + 1:].shape)
        out = model(changed)
        torch.testing.assert_close(out[:, :t + 1], base[:, :t + 1], atol=1e-5, rtol=1e-5)


def test_lm_routes_in_its_blocks():
    model = lm()
    assert all(isinstance(b, ConditionalRoutedTransformerBlock) and b.causal for b in model.encoder.blocks)
    assert len(routers(model)) == 3 * TINY["depth"]


def test_lm_tied_head_shares_the_embedding():
    model = lm(tie_embeddings=True)
    assert model.head.weight is model.tok_emb.weight
    assert lm(tie_embeddings=False).head.weight is not lm(tie_embeddings=False).tok_emb.weight


@pytest.mark.parametrize("variant", [{}, dict(dense=True)], ids=["routed", "dense"])
def test_generate_shape_and_greedy_top_k_1(variant):
    model = lm(**variant)
    prompt = torch.randint(0, 64, (2, 5))
    out = model.generate(prompt, 7, top_k=1)
    assert out.shape == (2, 12) and out.dtype == torch.long
    assert torch.equal(out[:, :5], prompt)
    assert torch.equal(out, model.generate(prompt, 7, top_k=1))
    assert torch.equal(out, model.generate(prompt, 7, temperature=0.0))


def test_generate_crops_context_and_restores_mode():
    model = lm().train()
    prompt = torch.randint(0, 64, (1, 40))  # longer than max_seq_len = 32
    out = model.generate(prompt, 3, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(1))
    assert out.shape == (1, 43)
    assert model.training
    again = model.generate(prompt, 3, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_generate_rejects_bad_arguments():
    model = lm()
    prompt = torch.randint(0, 64, (1, 4))
    for kwargs in (dict(max_new_tokens=-1), dict(max_new_tokens=2, top_k=0), dict(max_new_tokens=2, temperature=-1)):
        with pytest.raises(ValueError):
            model.generate(prompt, **kwargs)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_sequence_classifier_ignores_padding(variant):
    torch.manual_seed(0)
    model = CoLT5SequenceClassifier(vocab_size=20, num_classes=10, max_seq_len=48, **{**TINY, **variant}).eval()
    ids = torch.randint(0, 20, (2, 40))
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 27:] = False
    logits = model(ids, mask)
    assert logits.shape == (2, 10)
    changed = ids.clone()
    changed[1, 27:] = torch.randint(0, 20, (13,))
    torch.testing.assert_close(model(changed, mask), logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_image_classifier_takes_channel_first_images(variant):
    torch.manual_seed(0)
    model = CoLT5ImageClassifier(image_size=16, in_channels=3, num_classes=5, patch_size=2,
                                 **{**TINY, "routing": ROUTING.replace(light_window_size=4), **variant})
    logits = model(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 5)
    logits.sum().backward()
    assert model.stem.weight.grad is not None


def corner_readout_change(variant: dict, pixels) -> float:
    """How much a corner-readout classifier's logits move when `pixels` (an index into the 8x8 map)
    of every image change."""
    torch.manual_seed(0)
    model = CoLT5ImageClassifier(image_size=8, in_channels=2, num_classes=3, readout="corner",
                                 **{**IMAGE, **variant}).eval()
    images = torch.randn(2, 2, 8, 8)
    changed = images.clone()
    changed[(slice(None), slice(None), *pixels)] += 1.0
    return float((model(changed) - model(images)).abs().max())


OUTSIDE_THE_CORNER_TILE = (slice(4, None), slice(None))  # rows 4-7: no pixel of the top-left 4x4 tile


def test_image_classifier_corner_readout_sees_only_its_tile_without_the_heavy_branch():
    light_only = dict(routing=IMAGE["routing"].replace(heavy=False))
    assert corner_readout_change(light_only, OUTSIDE_THE_CORNER_TILE) == 0.0
    assert corner_readout_change(light_only, (3, 3)) > 0.0


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_image_classifier_corner_readout_reaches_past_its_tile_through_routed_or_dense_attention(variant):
    assert corner_readout_change(variant, OUTSIDE_THE_CORNER_TILE) > 1e-4


def test_encoder_shape_with_mask():
    encoder = CoLT5Encoder(**TINY)
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[0, 20:] = False
    assert encoder(torch.randn(2, 24, 32), mask).shape == (2, 24, 32)


def test_dense_switch_keeps_width_and_depth():
    routed, dense = CoLT5Encoder(**TINY), CoLT5Encoder(**TINY, dense=True)
    assert len(routed.blocks) == len(dense.blocks) == TINY["depth"]
    assert all(isinstance(b, DenseTransformerBlock) for b in dense.blocks)
    assert not routers(dense) and routers(routed)
    assert dense.norm.normalized_shape == routed.norm.normalized_shape == (32,)
    block = dense.blocks[0]
    assert block.attn.heads == ROUTING.heavy_heads and block.attn.dim_head == ROUTING.heavy_dim_head
    assert block.ff[0].out_features == 32 * 4  # hidden = dim · heavy_ff_mult


@pytest.mark.parametrize("build, match", [
    (lambda: CoLT5ImageClassifier(image_size=15, patch_size=2, **TINY), "patch_size"),
    (lambda: CoLT5ImageClassifier(image_size=24, patch_size=2, **TINY), "light_window_size"),
    (lambda: CoLT5ImageClassifier(image_size=16, readout="centre", **IMAGE), "readout"),
    (lambda: CoLT5LanguageModel(vocab_size=0), "vocab_size"),
    (lambda: CoLT5Encoder(**{**TINY, "routing": ROUTING.replace(router_type="nope")}), "router_type"),
], ids=["patch", "window", "readout", "vocab", "router_type"])
def test_bad_arguments_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="max_seq_len"):
        lm()(torch.randint(0, 64, (1, 33)))
    with pytest.raises(ValueError, match="LongTensor"):
        lm()(torch.randn(1, 8))
    image = CoLT5ImageClassifier(image_size=16, in_channels=3, patch_size=2, **IMAGE)
    with pytest.raises(ValueError, match="shape"):
        image(torch.randn(1, 1, 16, 16))


def test_every_model_and_module_takes_one_routing_config():
    import inspect

    from colt5_lightning.models.image import RoutedImageBlock
    from colt5_lightning.training import ImageClassificationModule, LanguageModelModule, SequenceClassificationModule
    for cls in (RoutedImageBlock, CoLT5Encoder, CoLT5LanguageModel, CoLT5SequenceClassifier, CoLT5ImageClassifier,
                LanguageModelModule, SequenceClassificationModule, ImageClassificationModule):
        parameters = inspect.signature(cls.__init__).parameters
        assert "routing" in parameters, cls.__name__
        flat = set(RoutingConfig.__dataclass_fields__) & set(parameters)
        assert not flat, f"{cls.__name__} still takes routing settings one by one: {sorted(flat)}"


def test_the_seed_block_takes_every_routing_setting_by_keyword():
    import inspect

    from colt5_lightning import ConditionalRoutedTransformerBlock
    missing = set(RoutingConfig.__dataclass_fields__) - set(inspect.signature(ConditionalRoutedTransformerBlock).parameters)
    assert not missing


def test_a_model_builds_its_blocks_from_the_routing_config():
    model = CoLT5LanguageModel(vocab_size=64, max_seq_len=32, dim=32, depth=1,
                               routing=ROUTING.replace(router_type="sinkhorn", light_window_size=16))
    assert {r.router_type for r in routers(model)} == {"sinkhorn"}
    assert model.encoder.blocks[0].attn.light_window_size == 16


@pytest.mark.parametrize("value", [None, {}, RoutingConfig()], ids=["none", "empty", "default"])
def test_routing_config_of_none_or_an_empty_mapping_is_the_default(value):
    assert RoutingConfig.of(value) == RoutingConfig()


def test_an_unknown_routing_setting_is_named():
    with pytest.raises(ValueError, match="routing has no setting 'light_windw_size'"):
        RoutingConfig.of({"light_windw_size": 8})


def tiny_vit(**kwargs):
    from colt5_lightning import ConditionalRoutedViT
    args = dict(image_size=16, patch_size=2, num_classes=5, dim=32, depth=2, attn_num_heavy_tokens_q=8,
                attn_num_heavy_tokens_kv=8, attn_heavy_dim_head=8, attn_heavy_heads=2, attn_light_dim_head=8,
                attn_light_heads=2, attn_light_window_size=4, ff_num_heavy_tokens=8, ff_heavy_mult=2,
                ff_light_mult=0.5)
    return ConditionalRoutedViT(**{**args, **kwargs})


def test_routed_vit_classifies_images_and_trains_every_parameter():
    torch.manual_seed(0)
    model = tiny_vit()
    logits = model(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 5)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_routed_vit_takes_rectangular_images_and_its_router_eps_default():
    model = tiny_vit(image_size=(16, 8), channels=1)
    assert model(torch.randn(2, 1, 16, 8)).shape == (2, 5)
    assert {r.eps for r in routers(model)} == {1.0}  # default_coor_descent_eps
    assert {r.eps for r in routers(tiny_vit(router_kwargs={"eps": 0.1}))} == {0.1}


def test_routed_vit_patches_hold_each_patch_row_by_row_channels_last():
    model = tiny_vit(image_size=4, patch_size=2, channels=2, attn_light_window_size=1)
    images = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    first = model.patches(images)[0, 0, 0]  # top-left patch: pixels (0,0) (0,1) (1,0) (1,1), 2 channels each
    assert first.tolist() == [0, 16, 1, 17, 4, 20, 5, 21]


@pytest.mark.parametrize("kwargs, match", [(dict(image_size=15), "divisible by patch_size"),
                                           (dict(dim=30), "multiple of 4")], ids=["patch", "dim"])
def test_routed_vit_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_vit(**kwargs)
