"""The stage-one/two training objective: the prediction MSE (the paper's L_diff; docs/design.md) plus
optional temporal terms on x̂_0 (docs/motion-smoothness.md)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.diffusion.schedule import NoiseSchedule
from models.dit import Condition, Drops
from models.motion import EXP, POSE


def training_loss(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: Tensor,
    cond: Condition,
    drops: Drops | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    velocity_weight: float = 0.0,
    acceleration_weight: float = 0.0,
) -> dict[str, Tensor]:
    """L = E‖y − ŷ_θ(x_t, t, cond)‖² + w_vel·E‖Δx̂_0 − Δx_0‖² + w_acc·E‖Δ²x̂_0 − Δ²x_0‖² over the window.

    y is ε, v or x_0 by `schedule.prediction`; x̂_0 is the output turned into a clean-motion estimate and
    Δ a difference between consecutive frames. With ε-prediction x̂_0's error is ε̂'s times √((1−ᾱ)/ᾱ)
    (157 at t = N); there the temporal terms are weighted by ᾱ_t per sample, which bounds them.
    x0: (B, T, 70) clean normalised motion of the window; cond, drops: the model's condition and
    drop records (stage two forces the audio drops and gives emotion labels).
    t: (B,) long, drawn uniformly if None; noise: (B, T, 70), standard normal if None.
    Returns {"loss": scalar (differentiable), "mse_exp", "mse_pose", "velocity", "acceleration": detached
    scalars (the temporal errors, whatever their weights), "t": (B,)}.
    The noise, x_t, the target and the reduction are float32 whatever the batch's dtype (bf16 under
    DeepSpeed, where ᾱ_t rounds to 1 at small t); x_t is cast to the batch's dtype only to feed the model.
    """
    if t is None:
        t = schedule.sample_timesteps(x0.shape[0], x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, device=x0.device, dtype=torch.float32)
    x_t = schedule.q_sample(x0, t, noise)  # (B, T, 70) float32
    out = model(x_t.to(x0.dtype), t, cond, drops).float()  # (B, T, 70)
    err = (out - schedule.target(x0, t, noise)).square()  # (B, T, 70)
    x0_hat, x0_true = schedule.output_to_x0(x_t, t, out), x0.float()  # (B, T, 70) each
    weight = schedule.gather("alphas_cumprod", t, x_t) if schedule.prediction == "eps" else 1.0  # (B, 1, 1)
    vel = (weight * (x0_hat.diff(dim=1) - x0_true.diff(dim=1)).square()).mean()
    acc = (weight * (x0_hat.diff(n=2, dim=1) - x0_true.diff(n=2, dim=1)).square()).mean()
    loss = err.mean()
    if velocity_weight:
        loss = loss + velocity_weight * vel
    if acceleration_weight:
        loss = loss + acceleration_weight * acc
    return {
        "loss": loss,
        "mse_exp": err[..., EXP].mean().detach(),
        "mse_pose": err[..., POSE].mean().detach(),
        "velocity": vel.detach(),
        "acceleration": acc.detach(),
        "t": t,
    }
