"""Progress a log file shows: one plain line every `trainer.log_every_n_steps` steps whenever the
progress bar is off or stdout is not a terminal (SLURM logs), and a step-based bar otherwise.

    [train] step 400/800 (50%) · loss 0.5123 · lr 9.71e-04 · 61.2 samples/s · ETA 0:03:05 · data bad 0/6400
            · val/mse 0.512 · val/mouth_audio_r 0.431

Lightning's own bar counts batches per epoch, which reads `Epoch 0/-2` and `50/10` in a run with
max_epochs=-1 that resumed mid-epoch; the bar here counts optimiser steps out of `max_steps`.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n


def progress_bar_wanted(env_value: str | None) -> bool:
    """The bar when PLAYMATE_PROGRESS is not 0 and stdout is a terminal; log lines otherwise."""
    return env_value != "0" and sys.stdout.isatty()


class StepProgressBar(TQDMProgressBar):
    """A bar of optimiser steps out of trainer.max_steps (resumed runs start where they stopped)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.initial = 0
        _update_n(bar, trainer.global_step)
        bar.set_description("step")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total):
            _update_n(bar, trainer.global_step)
            bar.set_postfix(self.get_metrics(trainer, pl_module))


class ProgressLog(pl.Callback):
    """Rank zero prints a progress line every `every` steps (and at the last step)."""

    def __init__(self, every: int, stream: Any = None) -> None:
        self.every = max(1, every)
        self.stream = stream
        self._t0: float | None = None
        self._step0 = 0
        self._samples = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0, self._step0, self._samples = time.perf_counter(), trainer.global_step, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._samples += len(batch["key"]) if isinstance(batch, dict) and "key" in batch else 0
        step, total = trainer.global_step, trainer.max_steps
        if not trainer.is_global_zero or (step % self.every and step < total):
            return
        print(self.line(trainer), file=self.stream or sys.stdout, flush=True)

    def line(self, trainer: pl.Trainer) -> str:
        step, total = trainer.global_step, trainer.max_steps
        elapsed = max(time.perf_counter() - (self._t0 or time.perf_counter()), 1e-9)
        done = max(step - self._step0, 1)
        parts = [f"[train] step {step}/{total} ({100 * step / max(total, 1):.0f}%)"]
        metrics = trainer.callback_metrics
        if "train/loss" in metrics:
            parts.append(f"loss {float(metrics['train/loss']):.4f}")
        if trainer.optimizers:
            parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.3g}")
        parts.append(f"{self._samples * trainer.world_size / elapsed:.1f} samples/s")
        parts.append(f"ETA {timedelta(seconds=round(elapsed / done * max(total - step, 0)))}")
        health = getattr(getattr(trainer, "datamodule", None), "health", None)
        if health is not None:
            parts.append(f"data bad {health.bad}/{health.seen}")
        parts += [f"{k} {float(v):.4g}" for k, v in sorted(metrics.items()) if k.startswith("val/")]
        return " · ".join(parts)
