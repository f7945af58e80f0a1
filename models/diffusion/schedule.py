"""Noise schedules and the forward process q(x_t | x_0) (DDPM, Ho et al. 2020; cosine: Nichol & Dhariwal 2021).

The schedule is a plain object, not an nn.Module: its tables must stay float64/float32 and out of
the model's state dict (DeepSpeed casts every module buffer to bf16).

Shape legend: B batch · T frames · M = 70 motion dims · N diffusion steps (num_timesteps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddim", "ddpm")
PREDICTIONS = ("eps", "v", "x0")


@dataclass
class DiffusionConfig:
    """Diffusion process and sampling defaults (docs/design.md)."""

    schedule: str = "linear"  # linear β (DDPM) or cosine ᾱ (improved DDPM)
    num_timesteps: int = 1000  # N training steps; keep ≥ 500 when switching samplers (§8 #10)
    beta_start: float = 1e-4  # linear β₁ (DDPM)
    beta_end: float = 0.02  # linear β_N (DDPM)
    cosine_s: float = 0.008  # cosine offset s (Nichol & Dhariwal)
    sampler: str = "ddim"  # ddim (default, fast) or ddpm (ancestral, N steps)
    sampling_steps: int = 50  # DDIM steps (25–50 is the usual range)
    eta: float = 0.0  # DDIM stochasticity: 0 deterministic, 1 ≈ DDPM posterior variance
    # Sampling clamps x̂_0 to ±clip_x0 (normalised units; data lie within about ±7) and re-derives ε̂
    # from it. With ε-prediction, x̂_0 = (x_t − √(1−ᾱ)ε̂)/√ᾱ amplifies ε̂ errors by 1/√ᾱ_N ≈ 157 at
    # the first step of the linear schedule; 0 disables the clamp.
    clip_x0: float = 10.0
    w_a: float = 1.5  # audio guidance scale (paper Eq. 8 default)
    w_e: float = 1.5  # emotion guidance scale (paper Eq. 8 default; used only with an emotion)
    # What the network outputs: eps (ε, DDPM; the paper's), v = √ᾱ ε − √(1−ᾱ) x_0 (Salimans & Ho 2022) or x0.
    # x0 by default: at the demo's budget ε-prediction left generated head pose 4.5× faster and 20× jerkier
    # than the data (ε̂ errors reach x̂_0 ×157 at t = N); x0 + acceleration_weight 4: 0.48× / 2.1×, lip
    # sync r 0.96 (docs/motion-smoothness.md).
    prediction: str = "x0"
    # Temporal losses on x̂_0 (in addition to the prediction MSE): weight · mean ‖Δx̂_0 − Δx_0‖² over frame
    # differences (velocity) and second differences (acceleration) of the window, normalised units.
    velocity_weight: float = 0.0
    acceleration_weight: float = 4.0
    # Guidance rescale φ (Lin et al. 2024): the guided output's per-sample std is pulled towards the
    # conditional pass's, out = φ·rescaled + (1−φ)·guided; 0 = plain classifier-free guidance.
    cfg_rescale: float = 0.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"diffusion schedule {self.schedule!r} is not one of {SCHEDULES}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler {self.sampler!r} is not one of {SAMPLERS}")
        if self.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be ≥ 2, got {self.num_timesteps}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start {self.beta_start} < beta_end {self.beta_end} < 1")
        if not 1 <= self.sampling_steps <= self.num_timesteps:
            raise ValueError(f"sampling_steps {self.sampling_steps} must be in [1, {self.num_timesteps}]")
        if self.clip_x0 < 0:
            raise ValueError(f"clip_x0 must be ≥ 0 (0 disables), got {self.clip_x0}")
        if self.eta < 0:
            raise ValueError(f"eta must be ≥ 0, got {self.eta}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction {self.prediction!r} is not one of {PREDICTIONS}")
        for name in ("velocity_weight", "acceleration_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0 (0 disables), got {getattr(self, name)}")
        if not 0 <= self.cfg_rescale <= 1:
            raise ValueError(f"cfg_rescale must be in [0, 1] (0 = plain guidance), got {self.cfg_rescale}")


def make_betas(config: DiffusionConfig) -> Tensor:
    """β_1..β_N as float64 (N,)."""
    n = config.num_timesteps
    if config.schedule == "linear":
        return torch.linspace(config.beta_start, config.beta_end, n, dtype=torch.float64)
    s = config.cosine_s
    steps = torch.arange(n + 1, dtype=torch.float64) / n  # (N + 1,)
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2  # ᾱ(t) up to normalisation
    alphas_cumprod = f / f[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]  # (N,)
    return betas.clamp(max=0.999)  # the cosine's last β would be 1 (Nichol & Dhariwal clip)


class NoiseSchedule:
    """Tables of a discrete diffusion process indexed by t ∈ [0, N)."""

    def __init__(self, betas: Tensor, clip_x0: float = 0.0, prediction: str = "eps"):
        if betas.ndim != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError(f"betas must be a 1-d tensor in (0, 1), got shape {tuple(betas.shape)}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction {prediction!r} is not one of {PREDICTIONS}")
        self.betas = betas.double()
        self.clip_x0 = clip_x0  # used by the samplers only (see DiffusionConfig.clip_x0)
        self.prediction = prediction  # what the network outputs (see DiffusionConfig.prediction)
        self.num_timesteps = len(betas)
        alphas = 1 - self.betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)  # ᾱ_t (N,)
        self.alphas_cumprod_prev = torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])
        # Posterior q(x_{t-1} | x_t, x_0) = N(coef1·x_0 + coef2·x_t, β̃_t).
        one_minus = 1 - self.alphas_cumprod
        self.posterior_variance = self.betas * (1 - self.alphas_cumprod_prev) / one_minus  # β̃_t
        self.posterior_mean_coef1 = self.betas * self.alphas_cumprod_prev.sqrt() / one_minus
        self.posterior_mean_coef2 = (1 - self.alphas_cumprod_prev) * alphas.sqrt() / one_minus
        self._device_cache: dict[tuple[str, torch.device], Tensor] = {}

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> NoiseSchedule:
        return cls(make_betas(config), config.clip_x0, config.prediction)

    def gather(self, name: str, t: Tensor, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Table `name` at steps t (B,) → (B, 1, …, 1) in `dtype` (default: like's), for broadcasting."""
        key = (name, t.device)
        if key not in self._device_cache:
            self._device_cache[key] = getattr(self, name).to(t.device)
        values = self._device_cache[key][t.long()]  # (B,) float64
        return values.reshape(-1, *([1] * (like.ndim - 1))).to(dtype or like.dtype)  # (B, 1, …)

    def sample_timesteps(self, batch: int, device: torch.device | str, generator=None) -> Tensor:
        """t ~ U{0, …, N−1}: (B,) long."""
        return torch.randint(0, self.num_timesteps, (batch,), device=device, generator=generator)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε: x0, noise (B, …), t (B,) → float32 (B, …) at least.

        Computed in float32 (float64 stays float64) whatever x0's dtype: under DeepSpeed bf16 the batch
        arrives in bf16, where ᾱ_t rounds to 1 for t < 10 (no noise at all) and √(1−ᾱ_t) is off by up to
        a third for small t. The caller casts x_t to the model's dtype when feeding the model.
        """
        dtype = torch.promote_types(x0.dtype, torch.float32)
        ab = self.gather("alphas_cumprod", t, x0, dtype)
        return ab.sqrt() * x0.to(dtype) + (1 - ab).sqrt() * noise.to(dtype)

    def target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """What the network learns to output for x_t = q_sample(x0, t, noise): ε, v or x_0 (float32 at least)."""
        if self.prediction == "eps":
            return noise.to(torch.promote_types(noise.dtype, torch.float32))
        dtype = torch.promote_types(x0.dtype, torch.float32)
        if self.prediction == "x0":
            return x0.to(dtype)
        ab = self.gather("alphas_cumprod", t, x0, dtype)
        return ab.sqrt() * noise.to(dtype) - (1 - ab).sqrt() * x0.to(dtype)  # v

    def output_to_eps(self, x_t: Tensor, t: Tensor, out: Tensor) -> Tensor:
        """The network's output (ε̂, v̂ or x̂_0 by `prediction`) as ε̂, what the samplers step with."""
        if self.prediction == "eps":
            return out
        ab = self.gather("alphas_cumprod", t, x_t)
        if self.prediction == "v":
            return (1 - ab).sqrt() * x_t + ab.sqrt() * out  # ε = √(1−ᾱ) x_t + √ᾱ v
        return (x_t - ab.sqrt() * out) / (1 - ab).sqrt()  # from x̂_0

    def output_to_x0(self, x_t: Tensor, t: Tensor, out: Tensor) -> Tensor:
        """The network's output as x̂_0 (no clamp): the training loss's temporal terms read it."""
        if self.prediction == "x0":
            return out
        ab = self.gather("alphas_cumprod", t, x_t)
        if self.prediction == "v":
            return ab.sqrt() * x_t - (1 - ab).sqrt() * out  # x_0 = √ᾱ x_t − √(1−ᾱ) v
        return (x_t - (1 - ab).sqrt() * out) / ab.sqrt()

    def denoise(self, x_t: Tensor, t: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """Sampling's (x̂_0, ε̂): x̂_0 clamped to ±clip_x0 when set, ε̂ re-derived to match it."""
        x0 = self.predict_x0(x_t, t, eps)
        if not self.clip_x0:
            return x0, eps
        x0 = x0.clamp(-self.clip_x0, self.clip_x0)
        ab = self.gather("alphas_cumprod", t, x_t)
        return x0, (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    def predict_x0(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x̂_0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t."""
        ab = self.gather("alphas_cumprod", t, x_t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
