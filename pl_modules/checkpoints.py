"""Reading training checkpoints in every form we write, and `playmate export`.

Forms: a Lightning checkpoint file (`*.ckpt`), a DeepSpeed checkpoint directory (`*.ckpt/` with
`checkpoint/`), or an export directory (`model.pt` + `config.yaml` + `stats.json`). Every form
reads back as a `Checkpoint` whose config is a typed `ExperimentConfig`. All loads use
`torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from configs.loader import ConfigError, ConfigPathError, experiment_from_dict, to_container
from configs.schema import ExperimentConfig
from models.dit import MotionDiT
from models.emotion import CONTROLLER_PREFIX, build_emotion_controller
from models.motion import MotionStats
from models.weights import load_strict

MODEL_FILE, CONFIG_FILE, STATS_FILE = "model.pt", "config.yaml", "stats.json"


@dataclass
class Checkpoint:
    """A trained MotionDiT as stored: fp32 weights (and EMA), its typed config and normalisation stats."""

    state_dict: dict[str, torch.Tensor]  # MotionDiT keys (no "model." prefix), fp32
    config: ExperimentConfig
    stats: MotionStats
    ema: dict[str, torch.Tensor] | None  # EMA of the trainable weights, same keys, or None
    global_step: int | None
    source: str

    def weights(self, use_ema: bool = True) -> dict[str, torch.Tensor]:
        """The model's fp32 state dict, with EMA values replacing the trained ones when available."""
        sd = dict(self.state_dict)
        if use_ema and self.ema:
            sd.update(self.ema)
        return sd

    @property
    def has_emotion_controller(self) -> bool:
        return any(k.startswith(CONTROLLER_PREFIX) for k in self.state_dict)


def read_checkpoint(path: str | Path, config_key: str = "checkpoint") -> Checkpoint:
    """Lightning file, DeepSpeed dir or export dir → `Checkpoint`."""
    p = Path(path)
    if p.is_dir() and (p / MODEL_FILE).is_file():
        return read_export(p)
    return checkpoint_from_dict(read_training_checkpoint(p, config_key), p, config_key)


def read_training_checkpoint(p: Path, config_key: str) -> dict[str, Any]:
    """A Lightning checkpoint file or a DeepSpeed checkpoint directory → its (fp32) checkpoint dict,
    checked to be a playmate training checkpoint (its resolved config in hyper_parameters)."""
    if not p.exists():
        raise ConfigPathError(f"{config_key}: {p} does not exist "
                              "(a .ckpt file, a DeepSpeed .ckpt dir or an export dir)")
    if p.is_dir():
        if not (p / "checkpoint").is_dir():
            raise ConfigError(f"{config_key}: {p} is a directory but neither a DeepSpeed checkpoint nor an export")
        from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "fp32.ckpt"
            convert_zero_checkpoint_to_fp32_state_dict(str(p), str(out))
            ckpt = _load(out, config_key, p)
    else:
        ckpt = _load(p, config_key, p)
    hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if "config" not in hp:
        raise ConfigError(f"{config_key}: {p} is not a playmate training checkpoint (no config in hyper_parameters)")
    return ckpt


def ema_weights(ckpt: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The EMACallback's fp32 shadow of the trainable weights (module keys), or None."""
    return next((state["shadow"] for name, state in ckpt.get("callbacks", {}).items()
                 if name.startswith("EMACallback")), None)


def checkpoint_from_dict(ckpt: dict[str, Any], p: Path, config_key: str) -> Checkpoint:
    hp = ckpt["hyper_parameters"]
    if hp["config"].get("stage") == "stage0":
        raise ConfigError(f"{config_key}: {p} is a stage-zero (face model) checkpoint; `playmate export` it and "
                          "use the export as a face_model_dir")
    ema = ema_weights(ckpt)
    strip = len("model.")
    return Checkpoint(
        state_dict={k[strip:]: v.float() for k, v in ckpt["state_dict"].items() if k.startswith("model.")},
        config=experiment_from_dict(hp["config"], str(p)),
        stats=MotionStats.from_dict(ckpt.get("motion_stats", hp.get("motion_stats"))),
        ema={k[strip:]: v.float() for k, v in ema.items()} if ema else None,
        global_step=ckpt.get("global_step"),
        source=str(p),
    )


def _load(path: Path, config_key: str, shown: Path) -> Any:
    """torch.load(weights_only=True) with one ConfigError line for a truncated, foreign or pickled file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if isinstance(e, pickle.UnpicklingError):  # torch's text goes on to suggest unpickling anyway: never
            why = "it holds pickled Python objects, not only tensors and plain containers"
        else:
            text = str(e).strip()
            why = f"{type(e).__name__}: {text.splitlines()[0].split('. ')[0] if text else ''}"
        raise ConfigError(f"{config_key}: {shown} cannot be loaded as a checkpoint with torch.load(weights_only=True)"
                          f" ({why}); give a checkpoint written by `playmate train` or an export directory") from None


def read_export(d: Path) -> Checkpoint:
    for f in (MODEL_FILE, CONFIG_FILE, STATS_FILE):
        if not (d / f).is_file():
            raise ConfigPathError(f"{d}: export directory lacks {f} (made by `playmate export`?)")
    stats = json.loads((d / STATS_FILE).read_text())
    return Checkpoint(
        state_dict=_load(d / MODEL_FILE, "checkpoint", d / MODEL_FILE),
        config=experiment_from_dict(yaml.safe_load((d / CONFIG_FILE).read_text()), str(d / CONFIG_FILE)),
        stats=MotionStats.from_dict(stats),
        ema=None,
        global_step=stats.get("global_step"),
        source=str(d),
    )


def export(src: str | Path, out: str | Path, use_ema: bool = True) -> Path:
    """Checkpoint (any form) → out/{model.pt (fp32 state dict), config.yaml, stats.json}."""
    return write_export(read_checkpoint(src, "export source"), out, use_ema)


def write_export(ckpt: Checkpoint, out: str | Path, use_ema: bool = True) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt.weights(use_ema), out / MODEL_FILE)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(to_container(ckpt.config), sort_keys=False))
    stats: dict[str, Any] = {**ckpt.stats.to_dict(), "global_step": ckpt.global_step, "ema": bool(use_ema and ckpt.ema)}
    (out / STATS_FILE).write_text(json.dumps(stats, indent=1))
    return out


def build_model(ckpt: Checkpoint, use_ema: bool = True) -> MotionDiT:
    """The checkpoint's MotionDiT (with its emotion controller if trained), weights loaded strictly, eval mode."""
    cfg = ckpt.config
    model = MotionDiT(cfg.model)
    if ckpt.has_emotion_controller:
        model.attach_emotion_controller(build_emotion_controller(cfg.emotion, model.config))
    hint = "HINT: check that model.preset and the audio encoder match the checkpoint's"
    load_strict(model, ckpt.weights(use_ema), ckpt.source, hint=hint)
    return model.eval()


def load_stage_one_into(module: Any, init_from: str | None) -> None:
    """Stage two: build the module's networks and load the stage-one weights (EMA when present)."""
    if not init_from:
        raise ConfigError("stage2.init_from: stage two needs a stage-one checkpoint; set stage2.init_from=PATH")
    ckpt = read_checkpoint(init_from, "stage2.init_from")
    if ckpt.has_emotion_controller:
        raise ConfigError(f"stage2.init_from: {init_from} already holds an emotion controller (a stage-two checkpoint)")
    mine, theirs = module.cfg.diffusion, ckpt.config.diffusion
    for key in ("prediction", "schedule", "num_timesteps", "beta_start", "beta_end", "cosine_s"):
        if getattr(mine, key) != getattr(theirs, key):  # the frozen network learnt the stage-one process
            raise ConfigError(f"diffusion.{key}={getattr(mine, key)!r} but the stage-one checkpoint {init_from} was "
                              f"trained with {getattr(theirs, key)!r}; set diffusion.{key}={getattr(theirs, key)}")
    module.configure_model()
    load_strict(module.model, ckpt.weights(True), f"stage2.init_from={init_from}",
                ignore_missing=lambda k: k.startswith(CONTROLLER_PREFIX),
                hint="HINT: check that model.preset and the audio encoder match the checkpoint's")
