"""Training callbacks: fp32 EMA, throughput/MFU, random states for exact resume
(preemption and requeue: pl_modules/preemption.py; progress lines: pl_modules/progress.py)."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import lightning.pytorch as pl
import numpy as np
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
        self._pairs: tuple[list[torch.Tensor], list[torch.nn.Parameter]] = ([], [])

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
        self._pairs = ([self.shadow[n] for n in params], list(params.values()))  # aligned lists for foreach

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step % self.every:
            return
        shadow, params = self._pairs
        src = [p.detach() if p.dtype == torch.float32 else p.detach().float() for p in params]
        torch._foreach_lerp_(shadow, src, 1.0 - self.decay**self.every)  # one fused update, no Python loop

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
    """samples/s and frames/s (all ranks), MFU on GPU from the model's FLOP count, and the data-health
    counts (`data/samples_read`, `data/bad_samples`) of this rank."""

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
        health = getattr(trainer.datamodule, "health", None)
        if health is not None:  # this rank's run-wide counts (host ints: no device sync)
            pl_module.log_dict({"data/samples_read": float(health.seen), "data/bad_samples": float(health.bad)},
                               batch_size=1)
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


class RandomStateCallback(pl.Callback):
    """Saves the random states of Python, numpy and torch (CPU and CUDA) with every checkpoint and
    restores them when a run resumes, so that it draws the same numbers as an uninterrupted run.

    Data workers need nothing here: their RNGs are seeded by (seed, epoch, rank, worker) and a
    resumed epoch regenerates the batches it skips (`datamodules.motion_wds.TrainWindowStream`).
    """

    def __init__(self) -> None:
        self._loaded: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loaded = state

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restore last, right before the first resumed step: nothing between draws from the RNGs."""
        s, self._loaded = self._loaded, None
        if s is None:
            return
        py = s["python"]
        random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss"]))
        n = s["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        torch.set_rng_state(s["torch"])
        if "cuda" in s and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(s["cuda"])
