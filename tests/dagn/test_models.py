"""DAGN variants: budgets, shapes, dtypes, and which parts learn in which training stage."""

from __future__ import annotations

import pytest
import torch

import dagn
from dagn.complexity import count_parameters, gflops_per_megapixel
from dagn.models import CIAutoEncoder, CIDecoder, DAGNConfig, FeatureDiscriminator, register_variant

VARIANTS = dagn.list_variants()
CHEAP = [v for v in VARIANTS if v in ("tiny", "small")]


def test_paper_variant_matches_released_size():
    with torch.device("meta"):
        model = dagn.build_model("paper")
    assert count_parameters(model) == pytest.approx(110.44e6, rel=0.005)
    assert count_parameters(model.ci_encoder) == pytest.approx(23.5e6, rel=0.01)  # ResNet-50 without the classifier


def test_small_variant_within_budget():
    model = dagn.build_model("small")
    assert count_parameters(model) <= 8e6
    assert gflops_per_megapixel(model) <= 100


def test_flops_scale_with_pixels():
    model = dagn.build_model("tiny")
    assert gflops_per_megapixel(model, 256, 256) == pytest.approx(gflops_per_megapixel(model, 512, 512), rel=0.02)


@pytest.mark.parametrize("variant", VARIANTS)
def test_any_size_restores_to_same_shape(variant):
    torch.manual_seed(0)
    model = dagn.build_model(variant).eval()
    x = torch.rand(1, 3, 37, 53)
    with torch.inference_mode():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("variant", CHEAP)
def test_batch_is_independent(variant):
    torch.manual_seed(0)
    model = dagn.build_model(variant).eval()
    x = torch.rand(3, 3, 40, 24)
    with torch.inference_mode():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", CHEAP)
def test_bfloat16_and_channels_last(variant):
    torch.manual_seed(0)
    model = dagn.build_model(variant).eval()
    x = torch.rand(2, 3, 48, 64)
    with torch.inference_mode():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    torch.testing.assert_close(cl, ref, atol=1e-4, rtol=1e-4)
    assert low.shape == ref.shape
    assert (low.float() - ref).abs().mean() < 0.02


def test_bad_input_shape_is_a_clear_error():
    model = dagn.build_model("tiny")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 32, 32))


def test_registry_refuses_duplicates_and_names_choices():
    with pytest.raises(ValueError, match="already registered"):
        register_variant("tiny", DAGNConfig())
    with pytest.raises(ValueError, match="tiny"):
        dagn.build_model("nope")


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError, match="extra"):
        DAGNConfig(widthz=(1, 2))


def _grads(module: torch.nn.Module) -> list[bool]:
    """Which trainable parameters the backward pass reached (zero-initialised last BNs give some exact-zero grads)."""
    return [p.grad is not None for p in module.parameters() if p.requires_grad]


def test_stage1_ci_autoencoder_and_discriminator_learn():
    torch.manual_seed(0)
    model = dagn.build_model("tiny")
    ae = CIAutoEncoder(model.ci_encoder, CIDecoder(model.config))
    disc = FeatureDiscriminator(model.config)
    x = torch.rand(2, 3, 32, 32)
    recon = ae(x)
    assert recon.shape == x.shape
    logits = disc(ae.features(x))
    loss = (recon - x).abs().mean() + logits.mean()
    loss.backward()
    assert all(_grads(ae.encoder)) and all(_grads(ae.decoder)) and all(_grads(disc))


def test_stage2_cs_encoder_learns_quality():
    torch.manual_seed(0)
    model = dagn.build_model("tiny")
    x = torch.rand(2, 3, 32, 32)
    level = model.cs_encoder.compression_level(x)
    assert level.shape == (2,)
    (level - torch.tensor([0.9, 0.1])).abs().mean().backward()
    assert all(_grads(model.cs_encoder))
    q = model.predict_quality(torch.rand(2, 3, 20, 30))
    assert q.shape == (2,) and ((q >= 0) & (q <= 100)).all()


def test_cs_highpass_input_drops_the_image_mean():
    """With ``cs_highpass`` the CS encoder sees no flat offsets (scene brightness), only local detail; files from
    before the field existed load without it."""
    torch.manual_seed(0)
    cs = dagn.build_model("tiny").cs_encoder.eval()
    assert dagn.get_config("tiny").cs_highpass
    x = torch.rand(1, 3, 32, 32) * 0.5
    with torch.no_grad():
        torch.testing.assert_close(cs(x + 0.25), cs(x), atol=1e-5, rtol=1e-4)
        cs.highpass = False
        assert not torch.allclose(cs(x + 0.25), cs(x), atol=1e-3)
    old = dagn.get_config("tiny").model_dump()
    del old["cs_highpass"]
    assert not DAGNConfig.model_validate(old).cs_highpass


def test_stage3_trains_restoration_only_and_frozen_encoders_stay_frozen():
    torch.manual_seed(0)
    model = dagn.build_model("tiny").freeze_encoders()
    model.train()
    assert not model.ci_encoder.training and not model.cs_encoder.training
    before = {k: v.clone() for k, v in [*model.ci_encoder.state_dict().items(), *model.cs_encoder.state_dict().items()]}
    opt = torch.optim.Adam(model.restoration_parameters(), lr=1e-3)
    x = torch.rand(2, 3, 32, 32)
    for _ in range(2):
        opt.zero_grad()
        (model(x) - x).abs().mean().backward()
        opt.step()
    assert all(p.grad is None for p in [*model.ci_encoder.parameters(), *model.cs_encoder.parameters()])
    restoration = model.restoration_parameters()
    assert sum(p.grad is not None for p in restoration) == len(restoration)
    after = {k: v for k, v in [*model.ci_encoder.state_dict().items(), *model.cs_encoder.state_dict().items()]}
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
