"""`playmate train CONFIG [key=value ...]`: wire config → datamodule, module, callbacks, logger, Trainer.

Exceptions propagate (a crash exits non-zero). The run directory is stable (runs/<name>), so a
second invocation, a requeued SLURM job or a manual restart resumes from its latest checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

from configs.loader import load_experiment, to_container, to_yaml
from configs.schema import ExperimentConfig
from datamodules.motion_wds import MotionDataModule
from pl_modules.callbacks import EMACallback, RequeueCallback, ThroughputCallback
from pl_modules.module import MotionDiffusionModule
from pl_modules.checkpoints import load_stage_one_into

log = logging.getLogger("playmate.train")


def build_logger(cfg: ExperimentConfig, run_dir: Path):
    if cfg.logger.name == "none" or cfg.logger.mode == "disabled":
        return False
    from lightning.pytorch.loggers import WandbLogger

    mode = cfg.logger.mode
    if mode == "auto":
        mode = "online" if os.environ.get("WANDB_API_KEY") or _netrc_has_wandb() else "offline"
    import wandb

    if wandb.run is not None:  # a run left open in this process would swallow this training's logs
        wandb.finish()
    run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]  # same dir ⇒ same W&B run
    logger = WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, name=cfg.name, id=run_id,
                         save_dir=str(run_dir), offline=mode == "offline", tags=list(cfg.logger.tags))
    logger.log_hyperparams(to_container(cfg))  # the resolved config: no environment, no secrets
    return logger


def _netrc_has_wandb() -> bool:
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def build_strategy(cfg: ExperimentConfig, per_rank_batch: int):
    t = cfg.trainer
    if t.strategy.startswith("deepspeed"):
        from lightning.pytorch.strategies import DeepSpeedStrategy

        return DeepSpeedStrategy(stage=int(t.strategy[-1]), logging_batch_size_per_gpu=per_rank_batch,
                                 allgather_bucket_size=t.deepspeed_bucket_size,
                                 reduce_bucket_size=t.deepspeed_bucket_size)
    if t.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(process_group_backend="gloo" if t.accelerator == "cpu" else None)
    return "auto"


def latest_checkpoint(ckpt_dir: Path) -> str | None:
    last = ckpt_dir / "last.ckpt"
    return str(last) if last.exists() else None


def train(cfg: ExperimentConfig) -> pl.Trainer:
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.trainer.accelerator == "cpu":  # leave a core per data worker: oversubscription costs 4× here
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
    resume = latest_checkpoint(ckpt_dir)
    if cfg.stage == "stage2" and resume is None:
        load_stage_one_into(module, cfg.stage2.init_from)
    log.info("Building callbacks, logger and trainer")
    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:08d}", auto_insert_metric_name=False,
                        every_n_train_steps=cfg.trainer.ckpt_every_n_steps,
                        save_top_k=cfg.trainer.keep_last_checkpoints,
                        monitor="step", mode="max", save_last=True),
        EMACallback(cfg.optim.ema_decay, cfg.optim.ema_every),
        ThroughputCallback(),
        RequeueCallback(ckpt_dir / "last.ckpt"),
    ]
    if cfg.eval.every_n_steps:
        from pl_modules.evaluation.callback import EvaluationCallback

        callbacks.append(EvaluationCallback(cfg.eval, data=list(cfg.data.val_shards),
                                            every_n_steps=cfg.eval.every_n_steps, out_dir=run_dir / "eval"))
    logger = build_logger(cfg, run_dir)
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    plugins = []
    if "SLURM_NTASKS" in os.environ:
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=False))  # RequeueCallback saves at a step boundary
    t = cfg.trainer
    trainer = pl.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=build_strategy(cfg, cfg.data.batch_size // (t.devices * t.num_nodes)), precision=t.precision,
        max_steps=t.max_steps, max_epochs=-1, val_check_interval=t.val_every_n_steps or None,
        check_val_every_n_epoch=None, limit_val_batches=t.limit_val_batches if t.val_every_n_steps else 0,
        num_sanity_val_steps=0, log_every_n_steps=t.log_every_n_steps, gradient_clip_val=cfg.optim.grad_clip or None,
        accumulate_grad_batches=t.accumulate_grad_batches, deterministic=t.deterministic,
        reload_dataloaders_every_n_epochs=1, default_root_dir=str(run_dir), logger=logger,
        callbacks=callbacks, plugins=plugins, enable_progress_bar=os.environ.get("PLAYMATE_PROGRESS", "1") == "1",
    )
    if trainer.is_global_zero:
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    log.info("Fitting (resume from %s)", resume or "scratch")
    trainer.fit(module, datamodule=dm, ckpt_path=resume)
    if not trainer.interrupted:  # the final state, whatever the checkpoint interval (all ranks: a collective)
        trainer.save_checkpoint(ckpt_dir / "last.ckpt")
    if logger and trainer.is_global_zero:  # close the W&B run: a next training in this process starts its own
        logger.experiment.finish()
    return trainer


def main(config: str, overrides: list[str]) -> pl.Trainer:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return train(load_experiment(config, overrides))
