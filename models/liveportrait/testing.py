"""Deterministic random weights in the public checkpoint format, for tests, demos and CI without downloads.

The files have the real keys, shapes and dtypes (tests/liveportrait/data/liveportrait_state_dicts.json) and load with
`load_face_model` exactly as the released weights do; their outputs are meaningless but finite and varied.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.liveportrait.face_model import FaceModel, FaceModelConfig, build_face_model
from models.liveportrait.loading import CHECKPOINT_FILES


@torch.no_grad()
def randomize_normalization_stats(model: nn.Module, generator: torch.Generator) -> None:
    """Give BatchNorm/GRN non-trivial values (a trained model's are not identity), so tests exercise them."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.copy_(1 + 0.1 * torch.randn(n, generator=generator))
            m.bias.copy_(0.1 * torch.randn(n, generator=generator))
            m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            m.running_var.copy_(0.75 + 0.5 * torch.rand(n, generator=generator))
        elif hasattr(m, "gamma") and hasattr(m, "beta"):  # GRN
            m.gamma.copy_(0.1 * torch.randn(m.gamma.shape, generator=generator))
            m.beta.copy_(0.1 * torch.randn(m.beta.shape, generator=generator))


def random_face_model(seed: int = 0, cfg: FaceModelConfig | str | None = None) -> FaceModel:
    """FaceModel with deterministic random weights (same seed → bit-identical); global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_face_model(cfg)
    randomize_normalization_stats(model, torch.Generator().manual_seed(seed + 1))
    return model


def write_random_weights(
    weights_dir: str | Path, seed: int = 0, cfg: FaceModelConfig | str | None = None
) -> Path:
    """Write the four .pth files with deterministic random weights to weights_dir/base_models/; return it.

    Full size by default (about 520 MB, the public shapes); cfg='tiny' writes small files that load with
    load_face_model(weights_dir, cfg=FaceModelConfig.tiny()).
    """
    base = Path(weights_dir) / "base_models"
    base.mkdir(parents=True, exist_ok=True)
    model = random_face_model(seed, cfg)
    for attr, fname in CHECKPOINT_FILES.items():
        torch.save(getattr(model, attr).state_dict(), base / fname)
    return base
