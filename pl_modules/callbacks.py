"""Training callbacks: fp32 EMA, throughput/MFU, SLURM requeue at a step boundary."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

log = logging.getLogger(__name__)


class EMACallback(pl.Callback):
    """fp32 exponential moving average of the trainable weights.

    Kept outside the (possibly DeepSpeed-managed) module: DeepSpeed casts module buffers to bf16, and
    a bf16 EMA with decay 0.9999 never moves (1,000 updates towards 1.5 leave it at 1.0). Updated
    every `every` steps from the working weights, saved in the callback's state (client state
    survives DeepSpeed saves), swapped in for validation, and used by `playmate export`.
    """

    def __init__(self, decay: float = 0.999, every: int = 1) -> None:
        self.decay, self.every = decay, every
        self.shadow: dict[str, torch.Tensor] = {}
        self._backup: dict[str, torch.Tensor] = {}
        self._loaded: dict[str, torch.Tensor] | None = None

    @staticmethod
    def _trainable(pl_module: pl.LightningModule) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in pl_module.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = self._trainable(pl_module)
        if self._loaded is not None:
            missing = set(params) - set(self._loaded)
            if missing:
                raise KeyError(f"EMA state in the checkpoint lacks {sorted(missing)[:5]}: "
                               "was it made by another model?")
            self.shadow = {n: self._loaded[n].to(params[n].device, torch.float32).clone() for n in params}
        elif not self.shadow:
            self.shadow = {n: p.detach().float().clone() for n, p in params.items()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step % self.every:
            return
        d = self.decay ** self.every
        for n, p in self._trainable(pl_module).items():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - d)

    def swap_in(self, pl_module: pl.LightningModule) -> None:
        params = self._trainable(pl_module)
        self._backup = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self.shadow[n].to(p.dtype))

    def swap_out(self, pl_module: pl.LightningModule) -> None:
        with torch.no_grad():
            for n, p in self._trainable(pl_module).items():
                p.copy_(self._backup[n])
        self._backup = {}

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.shadow and not trainer.sanity_checking:
            self.swap_in(pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._backup:
            self.swap_out(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "every": self.every, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loaded = state["shadow"]


# Dense bf16 peak FLOP/s by device name (vendor datasheets), for MFU.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "4090": 165e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


class ThroughputCallback(pl.Callback):
    """samples/s and frames/s (all ranks), and MFU on GPU from the model's FLOP count."""

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self._t0: float | None = None
        self._samples = 0
        self._frames = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, *args: Any) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        samples, frames = pl_module.throughput_counts(batch)
        self._samples += samples
        self._frames += frames
        if (batch_idx + 1) % self.window:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - self._t0
        world = trainer.world_size
        sps = self._samples * world / dt
        metrics = {"perf/samples_per_s": sps, "perf/frames_per_s": self._frames * world / dt,
                   "perf/step_time_s": dt / self.window}
        peak, flops = peak_flops(pl_module.device), pl_module.flops_per_sample()
        if peak is not None and flops is not None:  # forward + backward ≈ 3× forward
            metrics["perf/mfu"] = sps * 3 * flops / (world * peak)
        pl_module.log_dict(metrics, batch_size=1)
        self._t0, self._samples, self._frames = time.perf_counter(), 0, 0


class RequeueCallback(pl.Callback):
    """SIGUSR1 → checkpoint at the next step boundary on all ranks → `scontrol requeue` → stop.

    The signal handler only sets a flag (checkpointing inside a handler can hang: it may run mid-collective);
    the flag is max-reduced across ranks at the end of a step so every rank saves together.
    """

    def __init__(self, ckpt_path: str | Path, signum: int = signal.SIGUSR1) -> None:
        self.ckpt_path = str(ckpt_path)
        self.signum = signum
        self.flag = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        signal.signal(self.signum, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.flag = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        flag = torch.tensor(float(self.flag), device=pl_module.device)
        if trainer.world_size > 1:
            flag = trainer.strategy.reduce(flag, reduce_op="max")
        if flag.item() == 0:
            return
        log.warning("requeue signal: saving %s at step %d", self.ckpt_path, trainer.global_step)
        trainer.save_checkpoint(self.ckpt_path)
        if trainer.is_global_zero:
            requeue_job()
        trainer.should_stop = True
        self.flag = False


def requeue_job() -> None:
    """`scontrol requeue <job>` for this SLURM job (array tasks by their own id); no shell."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{array_task}" if array_job and array_task else os.environ.get("SLURM_JOB_ID")
    if not job:
        log.warning("not a SLURM job: checkpoint written, nothing to requeue")
        return
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, check=False)
    if result.returncode:
        log.error("scontrol requeue %s failed (%s): resubmit by hand; the run resumes from its checkpoint",
                  job, result.stderr.strip())
