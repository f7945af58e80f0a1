"""Loading the public LivePortrait checkpoints (the only place this package reads files).

Public layout (HuggingFace KwaiVGI/LivePortrait, `pretrained_weights/`):
    liveportrait/base_models/appearance_feature_extractor.pth
    liveportrait/base_models/motion_extractor.pth
    liveportrait/base_models/warping_module.pth
    liveportrait/base_models/spade_generator.pth
Each file is a plain state dict (a leading 'module.' on every key, if present, is stripped).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

from models.liveportrait.face_model import FaceModel, FaceModelConfig

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


def read_state_dict(path: str | Path) -> OrderedDict[str, Tensor]:
    """torch.load(weights_only=True) a state dict, stripping a leading 'module.' (keeps load metadata)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist; {LAYOUT_HINT}")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{path} is not a state dict of tensors (got {type(sd).__name__})")
    meta = getattr(sd, "_metadata", None)
    if sd and all(k.startswith("module.") for k in sd):
        sd = OrderedDict((k[len("module."):], v) for k, v in sd.items())
        if meta is not None:
            strip = {k: "" if k == "module" else k.removeprefix("module.") for k in meta}
            sd._metadata = OrderedDict((strip[k], v) for k, v in meta.items())
    return sd


def check_state_dict(module: nn.Module, sd: dict[str, Tensor], path: Path) -> None:
    """Raise KeyError/ValueError naming the file and offending keys unless keys and shapes match exactly."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        raise KeyError(
            f"{path}: state dict does not match {type(module).__name__}: missing keys {missing[:10]}"
            f"{' …' if len(missing) > 10 else ''}, unexpected keys {unexpected[:10]}"
            f"{' …' if len(unexpected) > 10 else ''}. HINT: is this the right file for this module "
            f"({LAYOUT_HINT}), and does the config match the checkpoint (e.g. not the 'tiny' preset)?"
        )
    wrong = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
             if tuple(sd[k].shape) != tuple(v.shape)]
    if wrong:
        raise ValueError(
            f"{path}: shape mismatch for {wrong[:10]}. HINT: the module config differs from the checkpoint's"
        )


def load_module_weights(module: nn.Module, path: str | Path) -> nn.Module:
    """Load one checkpoint file into `module` with strict=True after an explicit key/shape check."""
    path = Path(path)
    sd = read_state_dict(path)
    check_state_dict(module, sd, path)
    module.load_state_dict(sd, strict=True)
    return module


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
        load_module_weights(getattr(model, attr), base / fname)
    model.requires_grad_(False)
    model.amp_dtype = amp_dtype
    return model.to(device).eval()
