"""The three DAGN training stages as plain PyTorch objects: losses, optimizers, schedules, resumable state.

DAGN (arXiv 2405.09291) trains in three stages, each its own run seeded from the previous one:

1. :class:`CIStage`: the compression-insensitive (CI) encoder as an auto-encoder (with a :class:`CIDecoder`) that
   reconstructs the compressed input (L1), plus adversarial alignment: a paired :class:`FeatureDiscriminator` learns,
   with its own Adam, which of an image's and its JPEG's CI features are the original's; after
   ``discriminator_warmup_steps`` the encoder gets a term (weight ``adversarial_weight``) that makes the pair
   unorderable.
2. :class:`CSStage`: the compression-sensitive (CS) encoder regresses ``(100 - QF) / 100`` with L1 (the only loss, so
   its weight only rescales the learning rate; it stays 1).
3. :class:`RestorationStage`: the whole DAGN with both encoders frozen and in eval mode, L1 pixel loss, Adam on
   :meth:`DAGN.restoration_parameters`.

Every stage runs one forward and one backward per step, through a single module (``stage.net``) that returns its
losses. That module is what :class:`~torch.nn.parallel.DistributedDataParallel` wraps when a process group is up
(gloo on CPU, NCCL on GPU), so gradients of all trained parameters are averaged in one pass. In stage 1 the
encoder's adversarial term goes through the discriminator with *detached* parameters (``functional_call``), and the
discriminator's loss sees *detached* features: one backward gives each optimizer exactly its own gradients.

Learning rate: the release fine-tunes with Adam at 2e-5; we train from scratch, so the default is 5e-4 with a linear
warm-up (stabilises BatchNorm statistics and Adam's moments in the first steps), then the peak, then a cosine decay
to 1% over the last ``decay_steps`` of the stage (all of it after warm-up by default). With a decay phase, training
extends without restarting the schedule: resume from a checkpoint taken before the decay began with more planned
steps, and the flat peak simply runs longer. The schedule is a function of the step, so a resumed run continues it
exactly. With ``ema_decay`` the stage also keeps an exponential moving average of the model's weights, which is the
model it exports (:meth:`Stage.export_model`): an average over the last few hundred steps is a better model than
the last step's weights, most of all while the learning rate is still high.

Batches are dicts of tensors: ``clean`` and ``jpeg`` float (B, 3, P, P) in [0, 1], ``quality`` (B,) JPEG quality
factors; :func:`batch_from_numpy` turns the uint8 arrays the data pipeline produces into one.
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dagn.models import DAGN, CIDecoder, FeatureDiscriminator, build_model
from dagn.models.ci import CIAutoEncoder

__all__ = [
    "STAGES",
    "CIStage",
    "CSStage",
    "OptimConfig",
    "RestorationStage",
    "Stage",
    "batch_from_numpy",
    "build_stage",
    "decay_start",
    "lr_factor",
    "new_model",
]

# DDP without the per-forward copy of rank 0's buffers: torch 2.13 calls it forward_sync_buffers (and deprecates
# broadcast_buffers, which older releases, still common in GPU images, only know).
_NO_FORWARD_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


class OptimConfig(BaseModel):
    """Optimisation settings of one stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lr: float = Field(5e-4, gt=0, description="Peak Adam learning rate (the release fine-tunes at 2e-5).")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="Final learning rate as a fraction of lr (cosine).")
    warmup_steps: int = Field(50, ge=0, description="Linear warm-up steps.")
    decay_steps: int | None = Field(
        None,
        ge=1,
        description="Length of the final cosine decay; the steps between warm-up and decay run at the peak lr, so a "
        "run extends by resuming from a checkpoint before the decay with more planned steps. None: decay over all "
        "steps after warm-up.",
    )
    ema_decay: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Decay per step of an exponential moving average of the weights, exported instead of the last "
        "step's weights (e.g. 0.999: an average over ~1,000 steps). None: no average.",
    )
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas.")
    weight_decay: float = Field(0.0, ge=0, description="Adam L2 weight decay.")
    grad_clip: float | None = Field(1.0, gt=0, description="Clip the global gradient norm to this (None: off).")
    adversarial_weight: float = Field(
        1e-2,
        ge=0,
        description="Stage 1: weight of the encoder's adversarial loss. Strong enough that the encoder wins the game "
        "(the discriminator falls back towards chance) while the reconstruction L1 still leads; "
        "bench/stage1_game.py shows the curve.",
    )
    discriminator_lr: float = Field(1e-3, gt=0, description="Stage 1: Adam learning rate of the discriminator.")
    discriminator_warmup_steps: int = Field(
        200,
        ge=0,
        description="Stage 1: steps at the start of the stage in which only the discriminator plays (the encoder's "
        "adversarial weight is 0): it learns to tell an image's features from its JPEG's before the encoder is "
        "pushed to fool it, so the encoder's adversarial loss has a signal from the start.",
    )
    quality_weight: float = Field(1.0, gt=0, description="Stage 2: weight of the L1 loss on (100 - QF) / 100.")
    pixel_loss: Literal["l1", "relative_l1"] = Field(
        "l1",
        description="Stage 3: 'l1' (the release), or 'relative_l1': each patch's L1 weighted by 1 / its JPEG's L1 "
        "(weights averaging 1 per batch), so a good JPEG counts as much as a bad one, as in the benchmarks' per-QF "
        "dB gains (with plain L1 a QF 90 patch weighs ~1/5 of a QF 10 one, and a blind model learns to smooth good "
        "images).",
    )


RELATIVE_L1_EPS = 0.5 / 255  # floor of a patch's JPEG error in relative_l1: flat patches at QF 95 are near 0


def new_model(variant: str) -> DAGN:
    """A randomly initialised model to train from stage 1. Residual variants get a zero tail, so stage 3 starts from
    the identity (output = JPEG input) and improves on the input instead of first undoing a random correction;
    stages 1 and 2 never touch the tail, and a model continued from trained weights keeps its own."""
    model = build_model(variant)
    if model.config.global_residual:
        last = model.tail[0]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return model


def decay_start(total_steps: int, cfg: OptimConfig) -> int:
    """First step of the decay phase: checkpoints up to this step can be continued with more planned steps."""
    if cfg.decay_steps is None:
        return min(cfg.warmup_steps, total_steps)
    return max(cfg.warmup_steps, total_steps - cfg.decay_steps)


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of the peak lr at ``step`` (0-based): linear warm-up, flat peak, cosine from 1 to ``min_lr_ratio``
    over the decay phase (from :func:`decay_start` to ``total_steps``)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    start = decay_start(total_steps, cfg)
    if step < start:
        return 1.0
    progress = min(1.0, (step - start) / max(1, total_steps - start))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def batch_from_numpy(
    arrays: dict[str, np.ndarray], device: torch.device | str = "cpu", channels_last: bool = True
) -> dict[str, torch.Tensor]:
    """uint8 (B, P, P, 3) ``clean``/``jpeg`` and int ``quality`` arrays -> a float training batch on ``device``."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    batch = {}
    for key in ("clean", "jpeg"):
        if key in arrays:
            t = torch.from_numpy(np.ascontiguousarray(arrays[key])).to(device, non_blocking=True)
            batch[key] = (t.permute(0, 3, 1, 2).float() / 255.0).contiguous(memory_format=memory_format)
    if "quality" in arrays:
        batch["quality"] = torch.tensor(np.asarray(arrays["quality"]), dtype=torch.float32, device=device)
    return batch


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


class _CINet(nn.Module):
    """Stage-1 losses in one forward: reconstruction + adversarial (encoder side) and the discriminator's loss.

    The discriminator is *paired* (relativistic): it scores each feature cell, and a pair's logit is the score of the
    original's features minus that of its JPEG's, so it answers "which of the two is the original". Features of two
    different images differ far more than those of an image and its JPEG, so an unpaired discriminator (original = 1,
    compressed = 0 per image) stays at chance; in a pair the content cancels and the compression is what is left.
    The encoder is pushed the other way (the relativistic GAN's generator loss), towards pairs it cannot order:
    the same features for an image and its JPEG, which is what compression-insensitive means.
    """

    def __init__(self, autoencoder: CIAutoEncoder, discriminator: FeatureDiscriminator, adversarial_weight: float):
        super().__init__()
        self.autoencoder = autoencoder
        self.discriminator = discriminator
        self.adversarial_weight = adversarial_weight  # set per step by CIStage (0 while the discriminator warms up)

    def forward(self, clean: torch.Tensor, jpeg: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.autoencoder.features(torch.cat([jpeg, clean]))
        reconstruction = F.l1_loss(self.autoencoder.decoder(features.chunk(2)[0]), jpeg)
        # Encoder side: make the pairs unorderable to a discriminator whose weights do not move here.
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        scores = torch.func.functional_call(self.discriminator, frozen, (features,)).float()
        fooled_jpeg, fooled_clean = scores.chunk(2)
        adversarial = F.softplus(fooled_clean - fooled_jpeg).mean()
        # Discriminator side: the original should score higher, on features that carry no gradient to the encoder.
        score_jpeg, score_clean = self.discriminator(features.detach()).float().chunk(2)
        pair = score_clean - score_jpeg
        disc = F.softplus(-pair).mean()
        with torch.no_grad():
            disc_acc = (pair > 0).float().mean()
        loss = reconstruction + self.adversarial_weight * adversarial + disc
        return {
            "loss": loss,
            "l1": reconstruction.detach(),
            "adversarial": adversarial.detach(),
            "discriminator": disc.detach(),
            "discriminator_accuracy": disc_acc,
        }


class _CSNet(nn.Module):
    """Stage-2 loss: L1 between the CS head's compression level and (100 - QF) / 100."""

    def __init__(self, model: DAGN, weight: float):
        super().__init__()
        self.cs_encoder = model.cs_encoder
        self.weight = weight

    def forward(self, jpeg: torch.Tensor, quality: torch.Tensor) -> dict[str, torch.Tensor]:
        predicted = self.cs_encoder.compression_level(jpeg)
        target = (100.0 - quality) / 100.0
        l1 = F.l1_loss(predicted.float(), target)
        return {"loss": self.weight * l1, "l1": l1.detach(), "qf_error": 100.0 * l1.detach()}


class _RestorationNet(nn.Module):
    """Stage-3 loss between DAGN's output and the clean patch: L1, or L1 relative to the JPEG's own (see
    :attr:`OptimConfig.pixel_loss`)."""

    def __init__(self, model: DAGN, pixel_loss: str = "l1"):
        super().__init__()
        self.model = model
        self.relative = pixel_loss == "relative_l1"

    def forward(self, clean: torch.Tensor, jpeg: torch.Tensor) -> dict[str, torch.Tensor]:
        error = (self.model(jpeg).float() - clean).abs().mean(dim=(1, 2, 3))
        l1 = error.mean()
        if not self.relative:
            return {"loss": l1, "l1": l1.detach()}
        # Weights 1 / JPEG error, normalised to average 1 over the batch: the loss keeps L1's scale, so learning
        # rates (and Adam's moments, when a run switches loss) carry over.
        inverse = 1.0 / ((jpeg.float() - clean).abs().mean(dim=(1, 2, 3)) + RELATIVE_L1_EPS)
        loss = (error * inverse).mean() / inverse.mean()
        return {"loss": loss, "l1": l1.detach(), "error_ratio": (error * inverse).mean().detach()}


class Stage:
    """One training stage: owns the modules it trains, their optimizers, the step counter and the RNG state.

    Args:
        model: the DAGN being trained; stages share it (stage 1 trains ``ci_encoder``, stage 2 ``cs_encoder``,
            stage 3 the rest). It is moved to ``device``.
        total_steps: planned steps of the stage (sets the learning-rate schedule).
        optim: optimisation settings.
        device: where to train.
        distributed: wrap the loss module in DistributedDataParallel (needs an initialised process group).
        autocast_dtype: e.g. ``torch.bfloat16`` for mixed precision on GPU; None trains in float32.
        channels_last: use the channels-last memory format: faster convolutions on GPUs and on CPUs alike (one
            CPU thread: stage 1 1.2x, stage 2 1.1x, stage 3 1.07x per step; it also spares DDP's bucket copies the
            stride fix-ups of the 1x1 convolutions' gradients).
    """

    number: ClassVar[int]
    inputs: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        model: DAGN,
        *,
        total_steps: int,
        optim: OptimConfig | None = None,
        device: torch.device | str = "cpu",
        distributed: bool = False,
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = True,
    ) -> None:
        self.model = model
        self.total_steps = total_steps
        self.optim = optim or OptimConfig()
        self.device = torch.device(device)
        self.autocast_dtype = autocast_dtype
        self.channels_last = channels_last
        self.step_count = 0
        net = self._build_net().to(self.device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.optimizers: dict[str, torch.optim.Optimizer] = self._build_optimizers()
        # The average covers every floating tensor of the model (BatchNorm statistics too); frozen parts stay equal.
        self.ema: dict[str, torch.Tensor] | None = None
        if self.optim.ema_decay is not None:
            self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items() if v.is_floating_point()}
        self._peak_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}
        if distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # forward_sync_buffers=False: DDP would otherwise copy every BatchNorm statistic from rank 0 before each
            # forward, the frozen encoders' constant ones included (8 % of a CPU worker's step, by py-spy). The ranks
            # start from rank 0's buffers, then keep running statistics of their own (i.i.d.) batches; checkpoints and
            # the export take rank 0's.
            net = DistributedDataParallel(net, device_ids=device_ids, **_NO_FORWARD_SYNC)
        self.net = net

    # -- per stage --------------------------------------------------------------------------------------------------

    def _build_net(self) -> nn.Module:
        raise NotImplementedError

    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def _adam(self, params: list[nn.Parameter], lr: float) -> torch.optim.Adam:
        o = self.optim
        return torch.optim.Adam(params, lr=lr, betas=o.betas, weight_decay=o.weight_decay)

    # -- training ---------------------------------------------------------------------------------------------------

    def lr(self) -> float:
        return self.optimizers["main"].param_groups[0]["lr"]

    def _set_lr(self) -> None:
        factor = lr_factor(self.step_count, self.total_steps, self.optim)
        for name, opt in self.optimizers.items():
            for group, peak in zip(opt.param_groups, self._peak_lrs[name], strict=True):
                group["lr"] = peak * factor

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step on ``batch``; returns the step's metrics as floats (local to this process)."""
        self.net.train()
        self._set_lr()
        inputs = {k: batch[k].to(self.device, non_blocking=True) for k in self.inputs}
        amp = self.autocast_dtype
        with torch.autocast(self.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            out = self.net(**inputs)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        metrics = {k: float(v.detach()) for k, v in out.items()}
        if self.optim.grad_clip is not None:
            for name, opt in self.optimizers.items():
                params = [p for g in opt.param_groups for p in g["params"]]
                norm = float(nn.utils.clip_grad_norm_(params, self.optim.grad_clip))
                if name == "main":
                    metrics["grad_norm"] = norm
        for opt in self.optimizers.values():
            opt.step()
        metrics["lr"] = self.lr()
        self.step_count += 1
        self._update_ema()
        return metrics

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        # Warm-up of the average (as in TF's ExponentialMovingAverage with num_updates): early on, when the average
        # would mostly remember the starting point, it follows the weights more closely.
        decay = min(self.optim.ema_decay, (1 + self.step_count) / (10 + self.step_count))
        current = self.model.state_dict()
        tensors = list(self.ema.values())
        torch._foreach_lerp_(tensors, [current[k].detach() for k in self.ema], 1.0 - decay)

    def export_model(self) -> DAGN:
        """The model to save as the stage's result: the weight average when there is one, else the model itself."""
        if self.ema is None:
            return self.model
        averaged = copy.deepcopy(self.model)
        averaged.load_state_dict({**self.model.state_dict(), **self.ema})
        return averaged

    # -- state ------------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: modules, optimizers, step, torch RNG (CPU and CUDA)."""
        state: dict[str, Any] = {
            "stage": self.number,
            "step": self.step_count,
            "total_steps": self.total_steps,
            "net": {k: v.detach().cpu() for k, v in _unwrap(self.net).state_dict().items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "rng": {"torch": torch.get_rng_state()},
        }
        if self.ema is not None:
            state["ema"] = {k: v.cpu() for k, v in self.ema.items()}
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("stage") != self.number:
            raise ValueError(f"checkpoint is for stage {state.get('stage')}, not stage {self.number}")
        _unwrap(self.net).load_state_dict(state["net"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.step_count = int(state["step"])
        if self.ema is not None:
            # A checkpoint from a run without the average starts it from the restored weights.
            saved = state.get("ema") or self.model.state_dict()
            for k, v in self.ema.items():
                v.copy_(saved[k])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


class CIStage(Stage):
    """Stage 1: CI auto-encoder (L1 on the compressed input) with adversarial feature alignment."""

    number = 1
    inputs = ("clean", "jpeg")

    def _build_net(self) -> nn.Module:
        config = self.model.config
        self.autoencoder = CIAutoEncoder(self.model.ci_encoder, CIDecoder(config))
        self.discriminator = FeatureDiscriminator(config)
        return _CINet(self.autoencoder, self.discriminator, self.optim.adversarial_weight)

    def adversarial_weight(self) -> float:
        """The encoder's adversarial weight at the current step: 0 while the discriminator warms up."""
        return 0.0 if self.step_count < self.optim.discriminator_warmup_steps else self.optim.adversarial_weight

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        _unwrap(self.net).adversarial_weight = self.adversarial_weight()
        return super().step(batch)

    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {
            "main": self._adam(list(self.autoencoder.parameters()), self.optim.lr),
            "discriminator": torch.optim.Adam(
                self.discriminator.parameters(), lr=self.optim.discriminator_lr, betas=(0.5, 0.999)
            ),
        }


class CSStage(Stage):
    """Stage 2: CS encoder regressing the compression level (100 - QF) / 100."""

    number = 2
    inputs = ("jpeg", "quality")

    def _build_net(self) -> nn.Module:
        return _CSNet(self.model, self.optim.quality_weight)

    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"main": self._adam(list(self.model.cs_encoder.parameters()), self.optim.lr)}


class RestorationStage(Stage):
    """Stage 3: the restoration network with both encoders frozen (no gradients, eval-mode BatchNorm)."""

    number = 3
    inputs = ("clean", "jpeg")

    def _build_net(self) -> nn.Module:
        self.model.freeze_encoders()
        return _RestorationNet(self.model, self.optim.pixel_loss)

    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"main": self._adam(self.model.restoration_parameters(), self.optim.lr)}


STAGES: dict[int, type[Stage]] = {1: CIStage, 2: CSStage, 3: RestorationStage}


def build_stage(number: int, model: DAGN, **kwargs: Any) -> Stage:
    """The stage object for ``number`` (1, 2 or 3); keyword arguments as for :class:`Stage`."""
    try:
        cls = STAGES[number]
    except KeyError:
        raise ValueError(f"unknown stage {number}; stages are 1, 2, 3") from None
    return cls(model, **kwargs)
