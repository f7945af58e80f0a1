"""Preemption: SIGUSR1 (SLURM's warning before the time limit) and SIGTERM (scancel, preemption, the
time limit itself) lead to a checkpoint at the next step boundary on every rank — also in the middle
of a validation — then, for SIGUSR1 on SLURM, `scontrol requeue`, and a non-zero exit (128 + signal).

The signal handler only records the signal: a checkpoint written inside a handler can run in the
middle of a collective and hang. Ranks agree on the flag with an all-reduce at step (and validation
batch) boundaries, so every rank saves at the same step. Data-loader worker processes ignore both
signals (the datamodule's worker_init_fn): the main process stops them when it exits.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preempted(Exception):
    """Training stopped on a signal after writing its checkpoint; `exit_code` = 128 + signal number."""

    def __init__(self, signum: int, step: int, checkpoint: str, requeue_note: str) -> None:
        self.signum, self.step, self.checkpoint, self.requeue_note = signum, step, checkpoint, requeue_note
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"stopped on {name} at step {step}: checkpoint {checkpoint} written; {requeue_note}")


def requeue_job() -> str:
    """`scontrol requeue <job>` for this SLURM job (array tasks by their own id), no shell; a sentence
    saying what happened. Never raises: a missing `scontrol` (containers) is reported, not a traceback."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{array_task}" if array_job and array_task else os.environ.get("SLURM_JOB_ID")
    if not job:
        return "not a SLURM job, nothing to requeue: run the same command again to resume"
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, check=False,
                                timeout=60)
    except FileNotFoundError:
        return (f"scontrol is not available here (a container?), job {job} was not requeued: resubmit it "
                "to resume from the checkpoint")
    except subprocess.TimeoutExpired:
        return f"scontrol requeue {job} timed out: resubmit the job to resume from the checkpoint"
    if result.returncode:
        return (f"scontrol requeue {job} failed ({result.stderr.strip() or result.returncode}): resubmit the job "
                "to resume from the checkpoint")
    return f"SLURM job {job} requeued: it resumes from the checkpoint"


class PreemptionCallback(pl.Callback):
    """Checkpoint on SIGUSR1/SIGTERM at the next boundary, requeue on SLURM, stop with `Preempted`.

    check_every: boundaries between flag checks when several ranks train (each check is one
    all-reduce of a scalar); a single process checks every boundary for free.
    """

    def __init__(self, ckpt_path: str | Path, check_every: int = 10) -> None:
        self.ckpt_path = str(ckpt_path)
        self.check_every = max(1, check_every)
        self.received: list[int] = []
        self._calls = 0
        self._previous: dict[int, Any] = {}

    # ------------------------------------------------------------------------------------ handlers

    def _handler(self, signum: int, frame: Any) -> None:
        self.received.append(signum)

    def install(self) -> None:
        """(Re)install the handlers; Lightning installs its own SIGTERM handler at fit start."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            previous = signal.signal(sig, self._handler)
            self._previous.setdefault(sig, previous)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.install()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.install()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in self._previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    # ------------------------------------------------------------------------------------ boundaries

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._boundary(trainer, pl_module)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.state.fn == "fit":
            self._boundary(trainer, pl_module)

    def _agreed_signal(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> int:
        """The signal every rank acts on (the largest received anywhere; 0 = none)."""
        mine = max(self.received, default=0)
        if trainer.world_size == 1:
            return mine
        self._calls += 1
        if self._calls % self.check_every:
            return 0
        flag = torch.tensor(float(mine), device=pl_module.device)
        return int(trainer.strategy.reduce(flag, reduce_op="max").item())

    def _boundary(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        signum = self._agreed_signal(trainer, pl_module)
        if not signum:
            return
        log.warning("%s received: writing %s at step %d", signal.Signals(signum).name, self.ckpt_path,
                    trainer.global_step)
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # the full training state
        note = "stopping without a requeue (SIGTERM)"
        if signal.SIGUSR1 in self.received or signum == signal.SIGUSR1:
            note = requeue_job() if trainer.is_global_zero else "rank zero requeues the job"
        raise Preempted(signum, trainer.global_step, self.ckpt_path, note)
