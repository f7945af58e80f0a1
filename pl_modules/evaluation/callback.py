"""EvaluationCallback: the evaluator (pl_modules/evaluation/evaluator.py) every N optimiser steps in training.

At global_step % every_n_steps == 0 (once per step, also under gradient accumulation):
    EMA weights swapped in (when an EMACallback holds them) → this rank's clips (fixed list, split
    across ranks without duplicates) generated with fixed seeds, rendered when a face model is
    configured → metrics computed on every rank (a collective) → scalars eval/<name> to the logger
    and trainer.callback_metrics → on rank zero the report (report.md/html, metrics.json under
    out_dir/step<N>/, as `playmate evaluate` writes it; a W&B artifact of type "evaluation"), a W&B
    table (one row per clip) and sample mp4s with audio → EMA weights swapped out.
The metric networks live in this callback's Evaluator, never in the LightningModule, and the
callback's own checkpoint state is empty: checkpoints never contain metric weights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from configs.schema import EvaluationConfig
from datamodules.clips import EvalClip, load_clips, split_for_rank
from pl_modules.callbacks import EMACallback
from pl_modules.evaluation.evaluator import EvalResult, Evaluator
from pl_modules.inference.generator import MotionGenerator

log = logging.getLogger(__name__)


class EvaluationCallback(pl.Callback):
    """Periodic generation + metrics on a fixed validation set (docs/evaluation.md)."""

    def __init__(self, config: EvaluationConfig, data: list[str], every_n_steps: int,
                 out_dir: str | Path | None = None, evaluator: Evaluator | None = None) -> None:
        if every_n_steps < 1:
            raise ValueError(f"eval.every_n_steps must be ≥ 1 for the callback, got {every_n_steps} "
                             "(0 = do not add it)")
        if not data:
            raise ValueError("evaluation needs validation shards: set data.val_shards")
        self.config, self.data, self.every_n_steps = config, list(data), every_n_steps
        self.out_dir = Path(out_dir) if out_dir else None
        self._evaluator = evaluator
        self._clips: list[EvalClip] | None = None
        self._skipped: list[Any] = []  # what loading the clips left out (listed in the report)
        self._last_step = -1
        self.last_result: EvalResult | None = None

    # Metric networks are held here, outside the module tree, and nothing of them is saved.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.out_dir is None:
            self.out_dir = Path(trainer.default_root_dir) / "eval"

    def _ensure_ready(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._evaluator is None:
            self._evaluator = Evaluator(self.config, pl_module.device)
        if self._clips is None:
            clips = load_clips(self.data, self.config.num_clips, self.config.max_frames, "data.val_shards")
            self._skipped = clips.skipped
            self._clips = split_for_rank(clips, trainer.global_rank, trainer.world_size)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        self.evaluate(trainer, pl_module)

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> EvalResult:
        """Run the evaluation now (all ranks) and log it; returns the result."""
        self._ensure_ready(trainer, pl_module)
        ema = next((cb for cb in trainer.callbacks if isinstance(cb, EMACallback)), None)
        swapped = bool(ema is not None and getattr(ema, "shadow", None))
        if swapped:
            ema.swap_in(pl_module)
        try:
            result = self._evaluator.run(MotionGenerator.from_module(pl_module), self._clips)
        finally:
            if swapped:
                ema.swap_out(pl_module)
        self.last_result = result
        self._log(trainer, result)
        return result

    # ---------------------------------------------------------------------------------- logging

    def _log(self, trainer: pl.Trainer, result: EvalResult) -> None:
        step = trainer.global_step
        scalars = {f"eval/{k}": v for k, v in result.scalars.items()}
        scalars["eval/random_weights"] = float(result.random_weights)
        for k, v in scalars.items():  # same values on every rank (synced by compute)
            trainer.callback_metrics[k] = torch.tensor(v)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)  # rank-zero-only inside Lightning's loggers
        if not trainer.is_global_zero:
            return
        log.info("eval step %d%s: %s", step, " (RANDOM WEIGHTS)" if result.random_weights else "",
                 ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.scalars.items())))
        report = self.write_report(result, step) if self.out_dir is not None else None
        wandb = next((lg for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"), None)
        if wandb is None:
            return
        if report is not None:
            self.log_report_artifact(wandb, report, step)
        columns = sorted({k for row in result.per_clip for k in row}, key=lambda k: (k != "key", k))
        data = [[row.get(c) for c in columns] for row in result.per_clip]
        wandb.log_table(key="eval/clips", columns=columns, data=data, step=step)
        paths = self.write_videos(result, self.out_dir / f"step{step:08d}")
        if paths:
            wandb.log_video("eval/videos", [str(p) for p in paths], step=step, fps=[25] * len(paths),
                            format=["mp4"] * len(paths), caption=[p.stem for p in paths])
        if result.random_weights:
            wandb.experiment.summary["eval/title"] = result.title

    def write_report(self, result: EvalResult, step: int) -> Path:
        """report.md/html and metrics.json of this evaluation under out_dir/step<N>/; returns report.md."""
        from pl_modules.evaluation.report import CheckpointResult, write_report

        return write_report([CheckpointResult(f"step {step}", step, result)], self.out_dir / f"step{step:08d}",
                            self.data, self._skipped)

    @staticmethod
    def log_report_artifact(wandb_logger: Any, report: Path, step: int) -> None:
        """The report files as a W&B artifact of type "evaluation" (one version per evaluation)."""
        import wandb

        run = wandb_logger.experiment
        art = wandb.Artifact(f"{run.name or 'run'}-eval", type="evaluation", metadata={"global_step": step})
        for name in ("report.md", "report.html", "metrics.json"):
            art.add_file(str(report.with_name(name)))
        run.log_artifact(art, aliases=[f"step{step}", "latest"])

    @staticmethod
    def write_videos(result: EvalResult, out_dir: Path) -> list[Path]:
        """Sample clips as mp4 with their audio: generated | ground truth side by side
        (rendered frames when available, else the synthetic-world renderer); the report's own
        video_<key>.mp4 files are reused when it was written to the same folder."""
        from pl_modules.evaluation.media import sample_video

        paths = [out_dir / f"video_{s['key']}.mp4" for s in result.samples]
        return [p if p.is_file() else sample_video(s, p) for s, p in zip(result.samples, paths)]
