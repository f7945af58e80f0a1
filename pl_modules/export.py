"""`playmate export CKPT OUT`: any training checkpoint → its export.

A MotionDiT (stages one and two) → OUT/{model.pt, config.yaml, stats.json} (`pl_modules.checkpoints`).
A stage-zero checkpoint → the fine-tuned face model in the public LivePortrait layout:

    OUT/base_models/{appearance_feature_extractor,motion_extractor,warping_module,spade_generator}.pth
    OUT/config.yaml     the stage-zero experiment config
    OUT/export.json     source checkpoint, global step, whether the EMA was used, the trained modules

Each .pth is the plain fp32 state dict of one module with the release's key names (what
`models.liveportrait.load_face_model(OUT)` and LivePortrait's own loaders read). The trained modules
take their EMA weights unless `use_ema` is False. The frozen ones are copied from the start files
(`stage0.face_model_dir`) when they are readable: a DeepSpeed bf16 checkpoint holds frozen weights only in
bf16, and the export must keep them bit-identical to the release; otherwise from the checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import yaml

from configs.loader import experiment_from_dict, to_container
from models.liveportrait import CHECKPOINT_FILES, PRESETS, FaceModel, load_module_weights
from models.liveportrait.loading import resolve_base_models
from models.weights import WeightsError, load_strict
from pl_modules.checkpoints import (
    CONFIG_FILE,
    MODEL_FILE,
    checkpoint_from_dict,
    ema_weights,
    read_export,
    read_training_checkpoint,
    write_export,
)

log = logging.getLogger(__name__)

PREFIX = "face."  # StageZeroModule's attribute
BASE_MODELS = "base_models"
EXPORT_INFO = "export.json"


def face_state_dict(ckpt: dict[str, Any], use_ema: bool = True) -> tuple[dict[str, torch.Tensor], bool]:
    """The FaceModel's fp32 state dict (EMA values for the trained weights when present and asked for)."""
    sd = {k[len(PREFIX):]: v.float() for k, v in ckpt["state_dict"].items() if k.startswith(PREFIX)}
    ema = ema_weights(ckpt) if use_ema else None
    if ema:
        sd.update({k[len(PREFIX):]: v.float() for k, v in ema.items() if k.startswith(PREFIX)})
    return sd, bool(ema)


def export_face_model(ckpt: dict[str, Any], out: str | Path, use_ema: bool = True, source: str = "") -> Path:
    """Stage-zero checkpoint dict → OUT/base_models/*.pth (+ config.yaml, export.json); returns OUT."""
    cfg = experiment_from_dict(ckpt["hyper_parameters"]["config"], source)
    sd, used_ema = face_state_dict(ckpt, use_ema)
    model = FaceModel(PRESETS[cfg.stage0.face_model_preset]())
    load_strict(model, sd, f"export source {source}", hint="HINT: is this a stage-zero checkpoint of this version?")
    origin = {a: "trained" + (" (EMA)" if used_ema else "") if a in cfg.stage0.trainable else "checkpoint"
              for a in CHECKPOINT_FILES}
    try:
        base = resolve_base_models(cfg.stage0.face_model_dir or "")
        for attr in (a for a in CHECKPOINT_FILES if a not in cfg.stage0.trainable):
            load_module_weights(getattr(model, attr), base / CHECKPOINT_FILES[attr], "stage0.face_model_dir")
            origin[attr] = str(base / CHECKPOINT_FILES[attr])
    except (FileNotFoundError, WeightsError) as e:
        log.warning("export: frozen modules taken from the checkpoint (start files unusable: %s)", e)
    out = Path(out)
    (out / BASE_MODELS).mkdir(parents=True, exist_ok=True)
    for attr, fname in CHECKPOINT_FILES.items():
        torch.save(getattr(model, attr).state_dict(), out / BASE_MODELS / fname)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(to_container(cfg), sort_keys=False))
    info = {"source": source, "global_step": ckpt.get("global_step"), "ema": used_ema,
            "trained": list(cfg.stage0.trainable), "face_model_preset": cfg.stage0.face_model_preset,
            "started_from": cfg.stage0.face_model_dir, "weights": origin}
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=1))
    return out


def export_checkpoint(src: str | Path, out: str | Path, use_ema: bool = True) -> Path:
    """A Lightning file, DeepSpeed directory or export directory → its export in OUT (read once)."""
    p = Path(src)
    if p.is_dir() and (p / MODEL_FILE).is_file():
        return write_export(read_export(p), out, use_ema)
    raw = read_training_checkpoint(p, "export source")
    if raw["hyper_parameters"]["config"].get("stage") == "stage0":
        return export_face_model(raw, out, use_ema, source=str(p))
    return write_export(checkpoint_from_dict(raw, p, "export source"), out, use_ema)
