"""Weights & Biases for a training run: one W&B run per run directory (its id derives from the
directory, so a requeued or restarted job continues the same run), offline without an API key,
the resolved config logged once (no environment, no secrets), `group` = the experiment name and
`job_type` = the stage, the final export logged as an artifact.

Offline runs (compute nodes without network) write `run_dir/wandb/offline-run-*`, one directory per
requeue segment of the same run id; `wandb sync run_dir/wandb/offline-run-*` from a login node
uploads all of them into that one run (docs/training.md).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from configs.loader import to_container
from configs.schema import ExperimentConfig

log = logging.getLogger(__name__)


def run_id(run_dir: Path) -> str:
    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]


def _netrc_has_wandb() -> bool:
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def build_logger(cfg: ExperimentConfig, run_dir: Path, resuming: bool) -> Any:
    """The WandbLogger of this run (False when logging is off)."""
    if cfg.logger.name == "none" or cfg.logger.mode == "disabled":
        return False
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    mode = cfg.logger.mode
    if mode == "auto":
        mode = "online" if os.environ.get("WANDB_API_KEY") or _netrc_has_wandb() else "offline"
    if wandb.run is not None:  # a run left open in this process would swallow this training's logs
        wandb.finish()
    logger = WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, name=cfg.name, id=run_id(run_dir),
                         save_dir=str(run_dir), offline=mode == "offline", tags=list(cfg.logger.tags),
                         group=cfg.name, job_type=cfg.stage)
    if not resuming:  # the config is logged once, by the first segment of the run
        logger.log_hyperparams(to_container(cfg))
    return logger


def log_export_artifact(logger: Any, export_dir: Path, cfg: ExperimentConfig, step: int) -> None:
    """The exported model (model.pt, config.yaml, stats.json) as a W&B artifact of type "model"."""
    import wandb

    art = wandb.Artifact(f"{cfg.name}-export", type="model", metadata={"global_step": step, "stage": cfg.stage})
    art.add_dir(str(export_dir))
    logger.experiment.log_artifact(art)
