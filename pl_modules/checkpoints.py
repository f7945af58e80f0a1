"""Reading training checkpoints in every form we write, and `playmate export`.

Forms: a Lightning checkpoint file (`*.ckpt`), a DeepSpeed checkpoint directory (`*.ckpt/` with
`checkpoint/`), or an export directory (`model.pt` + `config.yaml` + `stats.json`). All loads use
`torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from configs.loader import ConfigError, ConfigPathError
from models.dit import MotionDiT, MotionDiTConfig
from models.emotion import CONTROLLER_PREFIX
from models.motion import MotionStats

MODEL_FILE, CONFIG_FILE, STATS_FILE = "model.pt", "config.yaml", "stats.json"


def read_checkpoint(path: str | Path, config_key: str = "checkpoint") -> dict[str, Any]:
    """Lightning file or DeepSpeed dir → {"state_dict", "config", "motion_stats", "ema" (or None), "global_step"}."""
    p = Path(path)
    if not p.exists():
        raise ConfigPathError(f"{config_key}: {p} does not exist (a .ckpt file, a DeepSpeed .ckpt dir or an export dir)")
    if p.is_dir() and (p / MODEL_FILE).is_file():
        return read_export(p)
    if p.is_dir():
        if not (p / "checkpoint").is_dir():
            raise ValueError(f"{config_key}: {p} is a directory but neither a DeepSpeed checkpoint nor an export")
        from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "fp32.ckpt"
            convert_zero_checkpoint_to_fp32_state_dict(str(p), str(out))
            ckpt = torch.load(out, map_location="cpu", weights_only=True)
    else:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    hp = ckpt.get("hyper_parameters", {})
    if "config" not in hp:
        raise ValueError(f"{config_key}: {p} is not a playmate training checkpoint (no config in hyper_parameters)")
    ema = None
    for name, state in ckpt.get("callbacks", {}).items():
        if name.startswith("EMACallback"):
            ema = state["shadow"]
    sd = {k[len("model."):]: v.float() for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    return {"state_dict": sd, "config": hp["config"], "motion_stats": ckpt.get("motion_stats", hp.get("motion_stats")),
            "ema": {k[len("model."):]: v.float() for k, v in ema.items()} if ema else None,
            "global_step": ckpt.get("global_step")}


def model_weights(ckpt: dict[str, Any], use_ema: bool = True) -> dict[str, torch.Tensor]:
    """The model's fp32 state dict, with EMA values replacing the trained ones when available."""
    sd = dict(ckpt["state_dict"])
    if use_ema and ckpt.get("ema"):
        sd.update(ckpt["ema"])
    return sd


def export(src: str | Path, out: str | Path, use_ema: bool = True) -> Path:
    """Checkpoint (any form) → out/{model.pt (fp32 state dict), config.yaml, stats.json}."""
    ckpt = read_checkpoint(src, "export source")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model_weights(ckpt, use_ema), out / MODEL_FILE)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(ckpt["config"], sort_keys=False))
    (out / STATS_FILE).write_text(json.dumps({**ckpt["motion_stats"], "global_step": ckpt["global_step"],
                                              "ema": bool(use_ema and ckpt.get("ema"))}, indent=1))
    return out


def read_export(d: Path) -> dict[str, Any]:
    for f in (MODEL_FILE, CONFIG_FILE, STATS_FILE):
        if not (d / f).is_file():
            raise FileNotFoundError(f"{d}: export directory lacks {f} (made by `playmate export`?)")
    stats = json.loads((d / STATS_FILE).read_text())
    return {"state_dict": torch.load(d / MODEL_FILE, map_location="cpu", weights_only=True),
            "config": yaml.safe_load((d / CONFIG_FILE).read_text()), "motion_stats": stats,
            "ema": None, "global_step": stats.get("global_step")}


def load_motion_model(path: str | Path, use_ema: bool = True) -> tuple[MotionDiT, dict[str, Any], MotionStats]:
    """Any checkpoint form → (MotionDiT in eval mode with its emotion controller if trained, config, stats)."""
    from models.emotion import EmotionControllerConfig, build_emotion_controller

    ckpt = read_checkpoint(path)
    cfg = ckpt["config"]
    model = MotionDiT(MotionDiTConfig(**cfg["model"]))
    sd = model_weights(ckpt, use_ema)
    if any(k.startswith(CONTROLLER_PREFIX) for k in sd):
        model.attach_emotion_controller(build_emotion_controller(EmotionControllerConfig(**cfg["emotion"]), model.config))
    load_strict(model, sd, str(path))
    return model.eval(), cfg, MotionStats.from_dict(ckpt["motion_stats"])


def load_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str, allow_missing: str | None = None) -> None:
    """load_state_dict(strict) with one clear error naming the keys (and shape mismatches)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not (allow_missing and k.startswith(allow_missing))]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ConfigError(
            f"{source}: checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatches {shapes[:3]}; check that model.preset and the audio encoder match the checkpoint's"
        )
    model.load_state_dict(sd, strict=allow_missing is None)


def load_stage_one_into(module: Any, init_from: str | None) -> None:
    """Stage two: build the module's networks and load the stage-one weights (EMA when present)."""
    if not init_from:
        raise ConfigError("stage2.init_from: stage two needs a stage-one checkpoint; set stage2.init_from=PATH")
    ckpt = read_checkpoint(init_from, "stage2.init_from")
    if any(k.startswith(CONTROLLER_PREFIX) for k in ckpt["state_dict"]):
        raise ConfigError(f"stage2.init_from: {init_from} already holds an emotion controller (a stage-two checkpoint)")
    module.configure_model()
    load_strict(module.model, model_weights(ckpt, True), f"stage2.init_from={init_from}", allow_missing=CONTROLLER_PREFIX)
