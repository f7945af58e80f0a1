"""Classifier-free guidance and the DDPM / DDIM samplers (pure functions over an ε-function).

A sampler only needs `eps_fn(x_t (B, T, M), t (B,) long) -> ε̂ (B, T, M)`; `guided_eps_fn` builds
one from a model and its conditioning, with audio CFG (stage one) or nested audio+emotion CFG
(stage two, paper Eq. 8), each evaluating all of its passes in one batched forward.
Call the model in eval mode (no dropout, no training-time condition drops).

Shape legend: B batch · T frames · M = 70 motion dims · K guidance passes (1, 2 or 3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from models.diffusion.schedule import NoiseSchedule
from models.emotion import NULL_EMOTION

EpsFn = Callable[[Tensor, Tensor], Tensor]

# ------------------------------------------------------------------------------------------------
# Guidance
# ------------------------------------------------------------------------------------------------


def _repeat_cond(cond: Mapping[str, Any], k: int) -> dict[str, Any]:
    """Stack k copies of every batched tensor along the batch axis: (B, …) → (K·B, …)."""
    return {key: torch.cat([v] * k) if isinstance(v, Tensor) else v for key, v in cond.items()}


def guided_eps(
    model: nn.Module,
    x_t: Tensor,
    t: Tensor,
    cond: Mapping[str, Any],
    w_a: float = 1.5,
    w_e: float | None = None,
) -> Tensor:
    """ε̂ with classifier-free guidance. x_t (B, T, M), t (B,), cond as in `training_loss`.

    w_e None (stage one, or stage two without emotion guidance), 2 passes:
        ε = ε(∅) + w_a·[ε(a) − ε(∅)]                  (w_a = 1: the single conditional pass)
    w_e set, cond["emotion"] (B,) long required (stage two, paper Eq. 8), 3 passes:
        ε = ε(∅,∅) + w_a·[ε(a,∅) − ε(∅,∅)] + w_e·[ε(a,e) − ε(a,∅)]
    """
    b = x_t.shape[0]
    cond = {k: v for k, v in cond.items() if k != "audio_drop"}
    drop, keep = (
        torch.ones(b, dtype=torch.bool, device=x_t.device),
        torch.zeros(b, dtype=torch.bool, device=x_t.device),
    )
    if w_e is None:
        if w_a == 1.0:
            return model(x_t, t, **cond, audio_drop=keep)
        eps = model(
            torch.cat([x_t] * 2),
            torch.cat([t] * 2),
            **_repeat_cond(cond, 2),
            audio_drop=torch.cat([drop, keep]),
        )  # (2B, T, M)
        e_null, e_audio = eps.chunk(2)  # 2 × (B, T, M)
        return e_null + w_a * (e_audio - e_null)
    emotion = cond.get("emotion")
    if emotion is None:
        raise ValueError("nested CFG (w_e set) needs cond['emotion'] of shape (B,)")
    null = torch.full_like(emotion, NULL_EMOTION)
    batched = _repeat_cond(cond, 3)
    batched["emotion"] = torch.cat([null, null, emotion])  # (3B,): ∅∅ · a∅ · ae
    eps = model(
        torch.cat([x_t] * 3), torch.cat([t] * 3), **batched, audio_drop=torch.cat([drop, keep, keep])
    )  # (3B, T, M)
    e00, ea0, eae = eps.chunk(3)  # 3 × (B, T, M)
    return e00 + w_a * (ea0 - e00) + w_e * (eae - ea0)


def guided_eps_fn(
    model: nn.Module, cond: Mapping[str, Any], w_a: float = 1.5, w_e: float | None = None
) -> EpsFn:
    """Close over the model and conditioning: the ε-function the samplers take."""
    return lambda x_t, t: guided_eps(model, x_t, t, cond, w_a, w_e)


# ------------------------------------------------------------------------------------------------
# Samplers
# ------------------------------------------------------------------------------------------------


def ddim_timesteps(num_timesteps: int, steps: int) -> Tensor:
    """Evenly spaced decreasing steps from N−1 to 0: (steps,) long."""
    return (
        torch.linspace(num_timesteps - 1, 0, steps, dtype=torch.float64).round().long().unique_consecutive()
    )


@torch.no_grad()
def ddim_sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    x_T: Tensor | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021): x_T ~ N(0, I) of `shape` (B, T, M) → x̂_0 (B, T, M) in `steps` steps."""
    x = torch.randn(shape, generator=generator, device=device) if x_T is None else x_T
    ts = ddim_timesteps(schedule.num_timesteps, steps).tolist()
    for i, step in enumerate(ts):
        t = torch.full((shape[0],), step, device=x.device, dtype=torch.long)
        x0, eps = schedule.denoise(x, t, eps_fn(x, t).to(x.dtype))  # (B, T, M) each
        ab = schedule.gather("alphas_cumprod", t, x)
        if i + 1 < len(ts):
            ab_prev = schedule.gather("alphas_cumprod", torch.full_like(t, ts[i + 1]), x)
        else:
            ab_prev = torch.ones_like(ab)  # the last step lands on x_0
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
        noise = torch.randn(x.shape, generator=generator, device=x.device) if eta > 0 else 0.0
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps + sigma * noise
    return x


@torch.no_grad()
def ddpm_sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    x_T: Tensor | None = None,
) -> Tensor:
    """Ancestral DDPM over all N steps with the posterior variance β̃_t: → x̂_0 (B, T, M)."""
    x = torch.randn(shape, generator=generator, device=device) if x_T is None else x_T
    for step in reversed(range(schedule.num_timesteps)):
        t = torch.full((shape[0],), step, device=x.device, dtype=torch.long)
        x0, _ = schedule.denoise(x, t, eps_fn(x, t).to(x.dtype))
        mean = (
            schedule.gather("posterior_mean_coef1", t, x) * x0
            + schedule.gather("posterior_mean_coef2", t, x) * x
        )
        if step > 0:
            var = schedule.gather("posterior_variance", t, x)
            x = mean + var.sqrt() * torch.randn(x.shape, generator=generator, device=x.device)
        else:
            x = mean  # β̃_0 = 0
    return x


def sample(
    model: nn.Module,
    schedule: NoiseSchedule,
    cond: Mapping[str, Any],
    shape: tuple[int, ...],
    sampler: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    w_a: float = 1.5,
    w_e: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One window: guided sampling of (B, T, 70) normalised motion for the given conditioning."""
    eps_fn = guided_eps_fn(model, cond, w_a, w_e)
    device = next(iter(v for v in cond.values() if isinstance(v, Tensor))).device
    if sampler == "ddim":
        return ddim_sample(eps_fn, schedule, shape, steps, eta, generator, device)
    if sampler == "ddpm":
        return ddpm_sample(eps_fn, schedule, shape, generator, device)
    raise ValueError(f"sampler {sampler!r} is not one of ('ddim', 'ddpm')")
