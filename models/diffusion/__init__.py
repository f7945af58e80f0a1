"""Diffusion for motion: schedules, the ε-MSE training loss, CFG, DDPM/DDIM and windowed generation.

Kept apart from the network (`models.dit`), as in DiT's `diffusion/` package: everything here takes
a model (or an ε-function) and tensors.
"""

from models.diffusion.loss import training_loss
from models.diffusion.sampling import (
    SamplerSettings,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    guided_eps,
    guided_eps_fn,
    sample,
)
from models.diffusion.schedule import DiffusionConfig, NoiseSchedule, make_betas
from models.diffusion.windowed import generate_windowed

__all__ = [
    "DiffusionConfig",
    "SamplerSettings",
    "NoiseSchedule",
    "make_betas",
    "training_loss",
    "guided_eps",
    "guided_eps_fn",
    "ddim_timesteps",
    "ddim_sample",
    "ddpm_sample",
    "sample",
    "generate_windowed",
]
