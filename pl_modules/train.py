"""`playmate train CONFIG [key=value ...]`: wire config → datamodule, module, callbacks, logger, Trainer.

The run directory (runs/<name>) is stable: a second invocation, a requeued SLURM job or a manual
restart resumes from its newest checkpoint that loads, with the same config (changed keys are
refused unless allowed: `pl_modules.run_identity`). Exceptions propagate; the CLI turns the ones a
user can act on into one line and an exit code (`pl_modules/commands/train.py`).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

from configs.loader import ConfigError, load_experiment
from configs.schema import ExperimentConfig
from datamodules.motion_wds import MotionDataModule
from pl_modules.callbacks import EMACallback, RandomStateCallback, ThroughputCallback
from pl_modules.checkpoint_io import AtomicCheckpointIO, clean_temporaries, find_resume_checkpoint
from pl_modules.checkpoints import load_stage_one_into
from pl_modules.export import export_checkpoint
from pl_modules.module import MotionDiffusionModule
from pl_modules.preemption import PreemptionCallback
from pl_modules.progress import ProgressLog, StepProgressBar, progress_bar_wanted
from pl_modules.run_identity import check_and_store
from pl_modules.strategy import build_strategy
from pl_modules.wandb_run import build_logger, log_export_artifact

log = logging.getLogger("playmate.train")


def check_environment(cfg: ExperimentConfig) -> None:
    """What the config asks of this machine (a config may be written on a login node without GPUs)."""
    t = cfg.trainer
    if t.accelerator == "gpu" or t.strategy.startswith("deepspeed"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator: {t.accelerator}/{t.strategy} needs a CUDA GPU but none is "
                              "visible here (torch.cuda.is_available() is False); use trainer=cpu (or trainer=ddp "
                              "with trainer.accelerator=cpu) on this machine")
        if t.devices > torch.cuda.device_count():
            raise ConfigError(f"trainer.devices: {t.devices} GPUs asked for, {torch.cuda.device_count()} visible; "
                              "set trainer.devices to at most that (on SLURM: --gpus-per-node)")
    elif t.accelerator == "cpu" and t.devices > (os.cpu_count() or 1):
        raise ConfigError(f"trainer.devices: {t.devices} CPU processes asked for on {os.cpu_count()} cores; "
                          "use trainer.devices ≤ the number of cores")
    if cfg.stage != "stage0" and cfg.data.audio_source == "precomputed":
        from datamodules.features import precomputed_mismatches

        for problem in precomputed_mismatches([*cfg.data.train_shards, *cfg.data.val_shards], cfg.audio):
            raise ConfigError(problem)


def _rank_from_env() -> int:
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")))


def build_callbacks(cfg: ExperimentConfig, ckpt_dir: Path, bar: bool) -> list[pl.Callback]:
    t = cfg.trainer
    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:08d}", auto_insert_metric_name=False,
                        every_n_train_steps=t.ckpt_every_n_steps, save_top_k=t.keep_last_checkpoints,
                        monitor="step", mode="max", save_last=True, enable_version_counter=False),
        EMACallback(cfg.optim.ema_decay, cfg.optim.ema_every),
        ThroughputCallback(),
        RandomStateCallback(),
        PreemptionCallback(ckpt_dir / "last.ckpt"),
        StepProgressBar() if bar else ProgressLog(t.log_every_n_steps),
    ]
    if cfg.eval.every_n_steps:
        from pl_modules.evaluation.callback import EvaluationCallback

        callbacks.append(EvaluationCallback(cfg.eval, data=list(cfg.data.val_shards),
                                            every_n_steps=cfg.eval.every_n_steps, out_dir=Path(cfg.run_dir) / "eval"))
    return callbacks


def train(cfg: ExperimentConfig) -> pl.Trainer:
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    check_environment(cfg)
    if _rank_from_env() == 0:
        for p in clean_temporaries(ckpt_dir):
            log.warning("removed %s, left by a save that was killed", p)
    resume = find_resume_checkpoint(ckpt_dir.resolve())  # absolute paths in the log line
    if _rank_from_env() == 0:
        check_and_store(run_dir, cfg, resuming=resume is not None)
    log.info(resume.describe() if resume else f"starting {cfg.name} from scratch in {run_dir.resolve()}")
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.trainer.accelerator == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # leave a core per data worker: oversubscription costs 4× on small machines
        torch.set_num_threads(max(1, ((os.cpu_count() or 1) - cfg.data.num_workers) // cfg.trainer.devices))

    log.info("Building datamodule")
    if cfg.stage == "stage0":  # the face model's motion-decoupling fine-tune (docs/stage-zero.md)
        from pl_modules.stage0 import build_stage_zero

        dm, module = build_stage_zero(cfg)
    else:
        dm = MotionDataModule(cfg.data, t_window=cfg.model.t_window, tp=cfg.model.tp, seed=cfg.seed)
        dm.setup("fit")  # resolves shards and statistics now: a bad path fails before the Trainer starts
        log.info("Building module (%s, preset %s)", cfg.stage, cfg.model.preset)
        module = MotionDiffusionModule(cfg, dm.stats)
    module._log_hyperparams = False  # the logger gets the config once, from build_logger (not at every restart)
    if cfg.stage == "stage2" and resume is None:
        load_stage_one_into(module, cfg.stage2.init_from)
    log.info("Building callbacks, logger and trainer")
    bar = progress_bar_wanted(os.environ.get("PLAYMATE_PROGRESS"))
    logger = build_logger(cfg, run_dir, resuming=resume is not None)
    callbacks = build_callbacks(cfg, ckpt_dir, bar)
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    plugins: list = [AtomicCheckpointIO()]
    if "SLURM_NTASKS" in os.environ:
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=False))  # PreemptionCallback saves at a step boundary
    t = cfg.trainer
    trainer = pl.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=build_strategy(cfg, cfg.data.batch_size // (t.devices * t.num_nodes)), precision=t.precision,
        max_steps=t.max_steps, max_epochs=-1, val_check_interval=t.val_every_n_steps or None,
        check_val_every_n_epoch=None, limit_val_batches=t.limit_val_batches if t.val_every_n_steps else 0,
        num_sanity_val_steps=0, log_every_n_steps=t.log_every_n_steps, gradient_clip_val=cfg.optim.grad_clip or None,
        accumulate_grad_batches=t.accumulate_grad_batches, deterministic=t.deterministic,
        reload_dataloaders_every_n_epochs=1, default_root_dir=str(run_dir), logger=logger,
        callbacks=callbacks, plugins=plugins, enable_progress_bar=bar,
    )
    # Resuming into a non-empty checkpoint directory is the point of a stable run directory.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume.path) if resume else None,
                weights_only=True)
    if not trainer.interrupted:  # the final state, whatever the checkpoint interval (all ranks: a collective)
        trainer.save_checkpoint(ckpt_dir / "last.ckpt", weights_only=False)
    if trainer.is_global_zero:
        _finish(cfg, run_dir, ckpt_dir, trainer, logger)
    return trainer


def _finish(cfg: ExperimentConfig, run_dir: Path, ckpt_dir: Path, trainer: pl.Trainer, logger) -> None:
    """Rank zero after a completed fit: export the final weights; log them as an artifact; close W&B."""
    if trainer.interrupted:
        return
    out = export_checkpoint(ckpt_dir / "last.ckpt", run_dir / "export")  # stage zero: the LivePortrait layout
    log.info("exported the final weights (EMA) to %s", out)
    if logger:
        log_export_artifact(logger, out, cfg, trainer.global_step)
        logger.experiment.finish()  # a next training in this process starts its own run


def main(config: str, overrides: list[str]) -> pl.Trainer:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return train(load_experiment(config, overrides))
