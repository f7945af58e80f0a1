"""Loading the public LivePortrait checkpoints (the only place this package reads files).

Public layout (HuggingFace KwaiVGI/LivePortrait, `pretrained_weights/`):
    liveportrait/base_models/appearance_feature_extractor.pth
    liveportrait/base_models/motion_extractor.pth
    liveportrait/base_models/warping_module.pth
    liveportrait/base_models/spade_generator.pth
Each file is a plain state dict (a leading 'module.' on every key, if present, is stripped); it is
read by `models.weights` (weights_only, strict key and shape check).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.liveportrait.face_model import FaceModel, FaceModelConfig
from models.weights import load_strict

# FaceModel attribute → checkpoint file name in base_models/.
CHECKPOINT_FILES: dict[str, str] = {
    "appearance_extractor": "appearance_feature_extractor.pth",
    "motion_extractor": "motion_extractor.pth",
    "warping_module": "warping_module.pth",
    "spade_generator": "spade_generator.pth",
}
LAYOUT_HINT = (
    "expected <weights_dir>/[liveportrait/]base_models/{" + ",".join(CHECKPOINT_FILES.values()) + "}"
)


def resolve_base_models(weights_dir: str | Path) -> Path:
    """Find base_models/: weights_dir, weights_dir/base_models or weights_dir/liveportrait/base_models."""
    root = Path(weights_dir).expanduser()
    for cand in (root, root / "base_models", root / "liveportrait" / "base_models"):
        if all((cand / f).is_file() for f in CHECKPOINT_FILES.values()):
            return cand
    for cand in (root, root / "base_models", root / "liveportrait" / "base_models"):
        present = [f for f in CHECKPOINT_FILES.values() if (cand / f).is_file()]
        if present:
            missing = sorted(set(CHECKPOINT_FILES.values()) - set(present))
            raise FileNotFoundError(f"LivePortrait weights in {cand} lack {missing}; {LAYOUT_HINT}")
    raise FileNotFoundError(f"no LivePortrait checkpoint files found under {root}; {LAYOUT_HINT}")


def load_module_weights(module: nn.Module, path: str | Path, config_key: str = "face_model_dir") -> nn.Module:
    """Load one public checkpoint file into `module`: keys and shapes must match exactly."""
    hint = (f"HINT: is this the right file for this module ({LAYOUT_HINT}), and does the config match the "
            "checkpoint (e.g. not the 'tiny' preset)?")
    return load_strict(module, path, config_key, hint=hint)


def load_face_model(
    weights_dir: str | Path,
    device: str | torch.device = "cpu",
    cfg: FaceModelConfig | None = None,
    amp_dtype: torch.dtype | None = None,
) -> FaceModel:
    """Build the FaceModel and load the four public checkpoints; frozen, eval mode, on `device`.

    amp_dtype (torch.float16 / torch.bfloat16) enables autocast on CUDA, as the public wrapper's
    half-precision flag; None runs in float32.
    """
    base = resolve_base_models(weights_dir)
    model = FaceModel(cfg)
    for attr, fname in CHECKPOINT_FILES.items():
        load_module_weights(getattr(model, attr), base / fname, f"face model {attr}")
    model.requires_grad_(False)
    model.amp_dtype = amp_dtype
    return model.to(device).eval()
