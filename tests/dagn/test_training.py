"""The three training stages in plain PyTorch: losses fall, frozen parts stay frozen, state round-trips exactly."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from skimage import data as skdata

from dagn.degradation import DegradationConfig, degrade
from dagn.models import build_model
from dagn.training import (
    RELATIVE_L1_EPS,
    OptimConfig,
    batch_from_numpy,
    build_stage,
    decay_start,
    lr_factor,
    new_model,
)

torch.set_num_threads(1)

_OPTIM = OptimConfig(lr=2e-3, warmup_steps=0, min_lr_ratio=1.0)


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    """8 real (clean, JPEG) 32x32 pairs from scikit-image's astronaut, QFs 10..90."""
    image = skdata.astronaut()
    rng = np.random.default_rng(0)
    cfg = DegradationConfig(patch_size=32)
    pairs = [degrade(image, rng, cfg, quality=q) for q in (10, 20, 30, 40, 50, 60, 80, 90)]
    arrays = {
        "clean": np.stack([p.clean for p in pairs]),
        "jpeg": np.stack([p.jpeg for p in pairs]),
        "quality": np.array([p.quality for p in pairs]),
    }
    return batch_from_numpy(arrays)


def _stage(number: int, seed: int = 0, optim: OptimConfig = _OPTIM):
    torch.manual_seed(seed)
    return build_stage(number, new_model("tiny"), total_steps=100, optim=optim)


def test_batch_from_numpy(batch):
    assert batch["clean"].shape == (8, 3, 32, 32) and batch["clean"].dtype == torch.float32
    assert float(batch["jpeg"].min()) >= 0.0 and float(batch["jpeg"].max()) <= 1.0
    assert batch["quality"].tolist() == [10, 20, 30, 40, 50, 60, 80, 90]


# Stage 3 starts as the identity (residual variant), so its loss starts at the JPEG error and must beat it.
@pytest.mark.parametrize(("number", "key", "factor"), [(1, "l1", 0.5), (2, "l1", 0.5), (3, "l1", 0.9)])
def test_loss_on_a_fixed_batch_falls(batch, number, key, factor):
    """Training-mode loss (batch statistics): eval-mode BatchNorm statistics lag behind in a 30-step run."""
    stage = _stage(number)
    losses = [stage.step(batch)[key] for _ in range(30)]
    assert stage.step_count == 30
    assert all(np.isfinite(losses))
    before, after = losses[0], float(np.mean(losses[-3:]))
    assert after < factor * before, f"stage {number}: {key} {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("number", [1, 2, 3])
def test_channels_last_trains_as_contiguous_does(batch, number):
    """The memory format (channels_last by default, for speed) changes summation order only, not the training."""
    assert batch["clean"].is_contiguous(memory_format=torch.channels_last)
    losses = {}
    for channels_last in (True, False):
        torch.manual_seed(0)
        stage = build_stage(number, new_model("tiny"), total_steps=100, optim=_OPTIM, channels_last=channels_last)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        inputs = {k: v.contiguous(memory_format=layout) if v.dim() == 4 else v for k, v in batch.items()}
        losses[channels_last] = [stage.step(inputs)["loss"] for _ in range(5)]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-3)


def test_stage1_trains_the_ci_encoder_and_discriminator_only(batch):
    stage = _stage(1)
    model = stage.model
    ci = {k: v.clone() for k, v in model.ci_encoder.state_dict().items()}
    others = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("ci_encoder.")}
    disc = {k: v.clone() for k, v in stage.discriminator.state_dict().items()}
    metrics = stage.step(batch)
    assert {"l1", "adversarial", "discriminator", "discriminator_accuracy"} <= set(metrics)
    assert any(not torch.equal(v, model.ci_encoder.state_dict()[k]) for k, v in ci.items())
    assert any(not torch.equal(v, stage.discriminator.state_dict()[k]) for k, v in disc.items())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in others.items())


def test_adversarial_term_moves_the_encoder_not_the_discriminator(batch):
    """The discriminator's gradients come from its own loss only, whatever the encoder's adversarial weight."""
    grads = {}
    for weight in (0.0, 10.0):
        stage = _stage(1, optim=_OPTIM.model_copy(update={"adversarial_weight": weight}))
        out = stage.net(clean=batch["clean"], jpeg=batch["jpeg"])
        out["loss"].backward()
        grads[weight] = (
            [p.grad.clone() for p in stage.discriminator.parameters()],
            [p.grad.clone() for p in stage.model.ci_encoder.parameters()],
        )
    for a, b in zip(grads[0.0][0], grads[10.0][0], strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(grads[0.0][1], grads[10.0][1], strict=True))


def test_encoder_plays_only_after_the_discriminator_warm_up(batch):
    optim = _OPTIM.model_copy(update={"adversarial_weight": 0.5, "discriminator_warmup_steps": 2})
    stage = _stage(1, optim=optim)
    weights = []
    for _ in range(4):
        weights.append(stage.adversarial_weight())
        stage.step(batch)
    assert weights == [0.0, 0.0, 0.5, 0.5]
    assert stage.net.adversarial_weight == 0.5


def test_paired_discriminator_learns_which_of_a_pair_is_the_original(batch):
    """Alone (no adversarial push), the discriminator orders an image's and its JPEG's features well above chance;
    the accuracy it reports is the fraction of pairs it orders right, so it is ~0.5 at the start."""
    optim = _OPTIM.model_copy(update={"discriminator_warmup_steps": 10**6, "discriminator_lr": 1e-2})
    stage = _stage(1, optim=optim)
    accuracy = [stage.step(batch)["discriminator_accuracy"] for _ in range(40)]
    assert 0.2 <= np.mean(accuracy[:3]) <= 0.8
    assert np.mean(accuracy[-5:]) >= 0.9, accuracy


def test_stage2_trains_the_cs_encoder_only(batch):
    stage = _stage(2)
    others = {k: v.clone() for k, v in stage.model.state_dict().items() if not k.startswith("cs_encoder.")}
    stage.step(batch)
    assert all(torch.equal(v, stage.model.state_dict()[k]) for k, v in others.items())


def test_frozen_encoders_do_not_change_in_stage3(batch):
    stage = _stage(3)
    model = stage.model
    encoders = {
        k: v.clone() for k, v in model.state_dict().items() if k.startswith(("ci_encoder.", "cs_encoder."))
    }  # weights and BatchNorm running statistics
    rest = {k: v.clone() for k, v in model.state_dict().items() if k not in encoders}
    for _ in range(3):
        stage.step(batch)
    assert not model.ci_encoder.training and not model.cs_encoder.training
    assert all(not p.requires_grad for p in [*model.ci_encoder.parameters(), *model.cs_encoder.parameters()])
    for k, v in encoders.items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in rest.items())


def test_residual_variant_starts_as_identity_and_a_trained_tail_is_kept(batch):
    stage = _stage(3)
    stage.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(stage.model(batch["jpeg"]), batch["jpeg"])
    trained = build_model("tiny")  # stands in for a model continued from trained weights (init_from)
    tail = {k: v.clone() for k, v in trained.tail.state_dict().items()}
    build_stage(3, trained, total_steps=10, optim=_OPTIM)
    for k, v in trained.tail.state_dict().items():
        torch.testing.assert_close(v, tail[k])
    assert any(v.abs().sum() > 0 for v in tail.values())


def test_relative_l1_weighs_good_and_bad_jpegs_alike(batch):
    """relative_l1 weighs each patch by 1 / its JPEG's L1: the identity's error ratio is ~1 whatever the QF mix."""
    optim = _OPTIM.model_copy(update={"pixel_loss": "relative_l1"})
    stage = build_stage(3, new_model("tiny"), total_steps=10, optim=optim)  # the identity at the start
    with torch.no_grad():
        losses = stage.net(batch["clean"], batch["jpeg"])
    e = (batch["jpeg"] - batch["clean"]).abs().mean(dim=(1, 2, 3))
    assert float(losses["error_ratio"]) == pytest.approx(float((e / (e + RELATIVE_L1_EPS)).mean()), rel=1e-4)
    assert 0.8 < float(losses["error_ratio"]) < 1.0  # each patch ~1, a little less where eps dominates (QF 90)
    assert float(losses["l1"]) < 0.05
    losses = [stage.step(batch)["loss"] for _ in range(30)]
    assert float(np.mean(losses[-3:])) < 0.99 * losses[0]  # learns from the first steps, as plain L1 does


@pytest.mark.parametrize("number", [1, 2, 3])
def test_state_dict_round_trip_continues_identically(batch, number):
    a = _stage(number, seed=0)
    for _ in range(2):
        a.step(batch)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = _stage(number, seed=123)  # different initialisation, overwritten by the state
    b.load_state_dict(torch.load(buffer, weights_only=False))
    assert b.step_count == 2
    assert a.lr() == b.lr()
    ma, mb = a.step(batch), b.step(batch)
    assert ma == mb
    # The stage's modules; the rest of the model comes from the previous stage's file, as in the pipeline.
    for (ka, va), (kb, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka


def test_state_of_another_stage_is_refused(batch):
    with pytest.raises(ValueError, match="stage 1"):
        _stage(2).load_state_dict(_stage(1).state_dict())
    with pytest.raises(ValueError, match="unknown stage"):
        build_stage(4, build_model("tiny"), total_steps=1)


def test_lr_schedule_warms_up_then_decays():
    cfg = OptimConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.01)
    assert lr_factor(0, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(9, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(10, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(55, 100, cfg) == pytest.approx(0.505)
    assert lr_factor(100, 100, cfg) == pytest.approx(0.01)
    assert lr_factor(500, 100, cfg) == pytest.approx(0.01)
    factors = [lr_factor(s, 100, cfg) for s in range(10, 101)]
    assert all(x >= y for x, y in itertools.pairwise(factors))


def test_schedule_with_a_decay_phase_extends_without_a_restart():
    cfg = OptimConfig(lr=1e-3, warmup_steps=10, decay_steps=40, min_lr_ratio=0.01)
    assert decay_start(100, cfg) == 60
    assert [lr_factor(s, 100, cfg) for s in (9, 10, 59, 60)] == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert lr_factor(80, 100, cfg) == pytest.approx(0.505)
    assert lr_factor(100, 100, cfg) == pytest.approx(0.01)
    # Planning 200 steps instead of 100: every step before the old decay gets the same lr, so a pre-decay
    # checkpoint continues as if the longer run had been planned from the start.
    assert all(lr_factor(s, 100, cfg) == lr_factor(s, 200, cfg) for s in range(61))
    assert lr_factor(100, 200, cfg) == 1.0 and decay_start(200, cfg) == 160
    assert decay_start(100, OptimConfig(warmup_steps=10)) == 10  # default: the whole run after warm-up decays


def test_ema_is_exported_and_round_trips(batch):
    optim = OptimConfig(lr=2e-3, warmup_steps=0, min_lr_ratio=1.0, ema_decay=0.5)
    a = _stage(3, optim=optim)
    start = {k: v.clone() for k, v in a.model.state_dict().items()}
    for _ in range(3):
        a.step(batch)
    raw, averaged = a.model.state_dict(), a.export_model().state_dict()
    moved = [k for k in raw if raw[k].is_floating_point() and not torch.equal(raw[k], start[k])]
    assert moved and "tail.0.weight" in moved
    for k in moved:  # the average lies strictly between the start and the last weights, not on either
        assert not torch.equal(averaged[k], raw[k]) and not torch.equal(averaged[k], start[k]), k
    plain = _stage(3)
    assert plain.export_model() is plain.model  # without ema_decay the model itself is exported

    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = _stage(3, seed=5, optim=optim)
    b.load_state_dict(torch.load(buffer, weights_only=False))
    for k, v in b.export_model().state_dict().items():
        assert torch.equal(v, averaged[k]), k
