"""The stage-one/two training objective: ε-prediction MSE (the paper's L_diff; docs/design.md)."""

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
) -> dict[str, Tensor]:
    """L_diff = E‖ε − ε̂_θ(x_t, t, cond)‖² over the window frames.

    x0: (B, T, 70) clean normalised motion of the window; cond, drops: the model's condition and
    drop records (stage two forces the audio drops and gives emotion labels).
    t: (B,) long, drawn uniformly if None; noise: (B, T, 70), standard normal if None.
    Returns {"loss": scalar (differentiable), "mse_exp", "mse_pose": detached scalars, "t": (B,)}.
    The noise, x_t, the target and the reduction are float32 whatever the batch's dtype (bf16 under
    DeepSpeed, where ᾱ_t rounds to 1 at small t); x_t is cast to the batch's dtype only to feed the model.
    """
    if t is None:
        t = schedule.sample_timesteps(x0.shape[0], x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, device=x0.device, dtype=torch.float32)
    x_t = schedule.q_sample(x0, t, noise)  # (B, T, 70) float32
    eps = model(x_t.to(x0.dtype), t, cond, drops)  # (B, T, 70)
    err = (eps.float() - noise.float()).square()  # (B, T, 70)
    return {
        "loss": err.mean(),
        "mse_exp": err[..., EXP].mean().detach(),
        "mse_pose": err[..., POSE].mean().detach(),
        "t": t,
    }
