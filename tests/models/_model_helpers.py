"""Shared helpers of tests/models (imported by name: tests/models is on sys.path under pytest)."""

from __future__ import annotations

from dataclasses import replace

import torch

from models.dit import ID_DIM, Condition, MotionDiTConfig

TP, T, L, C = 4, 12, 1, 16  # small context/window and a mel-like single-layer audio feature


def tiny_config(**overrides) -> MotionDiTConfig:
    """The model section of the real stage-one config, shrunk (tests.helpers.tiny_config): Tp = 4, T = 12,
    16 mel bands (L = 1, C = 16), no dropout; `overrides` replace MotionDiTConfig fields."""
    from tests.helpers import tiny_config as experiment

    extra = {"audio.n_mels": str(C), "model.tp": str(TP), "model.t_window": str(T), "model.dropout": "0.0"}
    return replace(experiment(**extra).model, **overrides)


def perturb_(module: torch.nn.Module, std: float = 0.05, seed: int = 0) -> None:
    """Add noise to every parameter (moves zero-initialised gates and heads off zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def make_inputs(
    batch: int = 3, with_context: bool = True, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, Condition]:
    """(x_t (B, T, 70), t (B,), Condition with audio (B, Tp + T, L, C), f_id and an optional context)."""
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch, T, 70, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    audio = torch.randn(batch, TP + T, L, C, generator=g)
    id_feat = torch.randn(batch, ID_DIM, generator=g)
    context = torch.randn(batch, TP, 70, generator=g) if with_context else None
    return x_t, t, Condition(audio, id_feat, context)
