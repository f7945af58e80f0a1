"""The motion-diffusion LightningModule: stage one, and stage two by configuration (docs/training.md).

Stage one trains the audio aligner and the MotionDiT. Stage two attaches the emotion controller,
freezes every stage-one parameter (optionally not the Exp-MLP), and trains with per-sample
condition dropout (audio, emotion) / (audio, ∅) / (∅, ∅). The frozen audio encoder and the networks
are built in `configure_model` (idempotent, as DeepSpeed requires). Normalisation statistics and
the resolved config travel with every checkpoint.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from configs.loader import to_container
from configs.schema import ExperimentConfig
from models.audio import build_audio_encoder, encode_windowed
from models.diffusion.loss import training_loss
from models.diffusion.schedule import NoiseSchedule
from models.dit import Condition, Drops, MotionDiT, build_motion_dit, make_id_feat
from models.emotion import build_emotion_controller, freeze_stage_one, stage_two_condition_drop
from models.motion import MotionStats, normalize_motion
from pl_modules.inference.generator import MotionGenerator, clip_seed
from pl_modules.inference.inputs import Reference
from pl_modules.validation import lips_protocol, log_mouth_plot, log_sample_media, motion_validation_metrics


class NonFiniteTrainingError(RuntimeError):
    """Training produced non-finite losses or gradients for too many consecutive steps."""


log = logging.getLogger(__name__)


def lr_factor(step: int, warmup: int, total: int, decay: str = "constant", floor: float = 0.1) -> float:
    """Multiplier of the base lr at optimiser step `step`: linear warm-up over `warmup` steps, then
    1 ("constant") or a cosine from 1 to `floor` at step `total` ("cosine")."""
    warm = max(warmup, 1)
    if step + 1 < warm or decay == "constant":
        return min(1.0, (step + 1) / warm)
    progress = min(1.0, (step + 1 - warm) / max(total - warm, 1))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class TrainableModule(pl.LightningModule):
    """What every stage's module shares: AdamW on the trainable parameters with the warm-up/cosine schedule of
    `cfg.optim`, the gradient-norm log and the non-finite guard, and the batch counts of the throughput
    callback. A subclass's training_step sets `self._last_loss`."""

    cfg: ExperimentConfig

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.cfg.optim
        # Fused AdamW (optim.fused, default): one kernel per step, and a device-side `found_inf` that skips
        # a non-finite step without a host synchronisation (see on_before_optimizer_step).
        opt = torch.optim.AdamW(self.trainable_parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
                                fused=o.fused or None)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, partial(lr_factor, warmup=o.warmup_steps, total=self.cfg.trainer.max_steps, decay=o.decay,
                         floor=o.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---------------------------------------------------------------------------------- non-finite guard

    _last_loss: Tensor | None = None  # the step's loss (DeepSpeed: judged before the engine's step)
    _bad_run: Tensor | None = None  # consecutive skipped (non-finite) steps, on the device

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradient norm, and the non-finite guard: a step whose loss or gradients are not finite is
        skipped on the device (fused AdamW's found_inf, no host sync; other AdamW implementations: the
        gradients are dropped after one host sync); `optim.max_bad_steps`
        consecutive skipped steps stop training (checked at logging steps, `check_bad_steps`)."""
        grads = [p.grad for p in self.trainable_parameters() if p.grad is not None]
        if not grads:  # DeepSpeed ZeRO keeps the gradients in its partitions: judge the loss, before the step
            if self._last_loss is not None and not torch.isfinite(self._last_loss).item():
                raise NonFiniteTrainingError(self._nonfinite_message(1))
            return
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))  # DDP: already all-reduced
        bad = ~torch.isfinite(norm)
        inner = getattr(optimizer, "optimizer", optimizer)
        if inner.defaults.get("fused"):
            inner.found_inf = bad.float()  # the fused kernel skips the update and Adam's step count
        elif bad.item():  # other implementations: drop the gradients (one host sync), AdamW skips those params
            for p in self.trainable_parameters():
                p.grad = None
        previous = self._bad_run if self._bad_run is not None else torch.zeros((), dtype=torch.long)
        self._bad_run = torch.where(bad, previous.to(norm.device) + 1, 0)
        self.log("train/grad_norm", torch.where(bad, torch.zeros_like(norm), norm), batch_size=1)

    def check_bad_steps(self) -> None:
        """Host-side look at the consecutive skipped steps (one sync; called at logging steps)."""
        run = int(self._bad_run.item()) if self._bad_run is not None else 0
        if run >= self.cfg.optim.max_bad_steps:
            raise NonFiniteTrainingError(self._nonfinite_message(run))
        if run:
            log.warning("step %d: %d consecutive step(s) skipped: non-finite loss or gradients",
                        self.global_step, run)

    def _nonfinite_message(self, run: int) -> str:
        return (f"training stopped at step {self.global_step}: {run} consecutive step(s) with a non-finite loss "
                f"or gradients (optim.max_bad_steps={self.cfg.optim.max_bad_steps}); no update was applied and "
                "the checkpoints are the last good ones. Check the data (`playmate shards check`), lower "
                "optim.lr, or raise optim.grad_clip")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (self.global_step % self.cfg.trainer.log_every_n_steps == 0 or self.trainer.should_stop
                or self.global_step >= self.cfg.trainer.max_steps):
            self.check_bad_steps()

    def throughput_counts(self, batch: dict[str, Any]) -> tuple[int, int]:
        """(samples, frames) of a training batch, for `ThroughputCallback`."""
        raise NotImplementedError

    def flops_per_sample(self) -> float | None:
        """Forward FLOPs of one sample (for MFU), or None when not counted."""
        return None


class MotionDiffusionModule(TrainableModule):
    """Diffusion (x_0-, ε- or v-prediction, `diffusion.prediction`) over 70-d motion windows conditioned on audio,
    identity and context."""

    def __init__(self, cfg: ExperimentConfig, stats: MotionStats) -> None:
        super().__init__()
        self.cfg = cfg
        self.stats = stats
        self.save_hyperparameters({"config": to_container(cfg), "motion_stats": stats.to_dict()})
        self.schedule = NoiseSchedule.from_config(cfg.diffusion)
        self.model: MotionDiT | None = None
        # The frozen audio encoder is deliberately not a registered submodule: it never enters
        # checkpoints or the optimiser and is rebuilt from its own files (`configure_model`).
        self._audio_encoder: list[torch.nn.Module] = []
        self.val_outputs: list[dict[str, Any]] = []

    # ---------------------------------------------------------------------------------- building

    def configure_model(self) -> None:
        if self.model is not None:
            return
        if self.cfg.data.audio_source == "wav":
            self._audio_encoder = [build_audio_encoder(self.cfg.audio).eval().requires_grad_(False)]
        self.model = build_motion_dit(self.cfg.model)
        if self.cfg.stage == "stage2":
            self.model.attach_emotion_controller(build_emotion_controller(self.cfg.emotion, self.cfg.model))
            freeze_stage_one(self.model, self.cfg.emotion.train_exp_head)
        if self.cfg.trainer.compile:  # in place: checkpoint keys unchanged (MotionDiT.compile_blocks)
            self.model.compile_blocks()

    @property
    def audio_encoder(self) -> torch.nn.Module | None:
        """The frozen encoder of wav batches (None when training on precomputed features), on this device."""
        return self._audio_encoder[0].to(self.device) if self._audio_encoder else None

    def train(self, mode: bool = True) -> MotionDiffusionModule:
        """Stage two keeps the frozen stage-one network in eval mode (no dropout) while training."""
        super().train(mode)
        if mode:
            self._frozen_parts_to_eval()
        return self

    def _frozen_parts_to_eval(self) -> None:
        if self.cfg.stage == "stage2" and self.model is not None:
            self.model.eval()
            self.model.emotion_controller.train()
            if self.cfg.emotion.train_exp_head:
                self.model.exp_mlp.train()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Lightning restores the modes it captured before validation module by module, without
        # calling `train()`; so stage two re-applies them before every step.
        self._frozen_parts_to_eval()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def throughput_counts(self, batch: dict[str, Any]) -> tuple[int, int]:
        b, s = batch["motion"].shape[:2]
        return b, b * (s - self.cfg.model.tp)

    def flops_per_sample(self) -> float | None:
        return self.model.flops_per_sample()

    # ---------------------------------------------------------------------------------- batches

    def audio_features(self, batch: dict[str, Any]) -> Tensor:
        """(B, Tp+T, L, C) encoder features of the window (computed here for wav batches).

        On a GPU with bf16 training the frozen encoder runs under bf16 autocast: it is not part of the
        DeepSpeed engine, so without it wav2vec2 would run in fp32 (≈ 72 GFLOP per window, more than
        the DiT's training step) while the DiT runs in bf16; DDP's bf16-mixed already autocasts.
        """
        if self.cfg.data.audio_source == "precomputed":
            return batch["audio"].float()
        bf16 = self.device.type == "cuda" and self.cfg.trainer.precision == "bf16-mixed"
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            a = self.cfg.audio  # a window of Tp + T frames is exactly one encoder window (encode_windowed)
            feats = encode_windowed(self.audio_encoder, batch["audio"].float(), batch["motion"].shape[1],
                                    a.context_frames, a.context_overlap)
            return feats.to(batch["motion"].dtype)

    def condition(self, batch: dict[str, Any]) -> Condition:
        return Condition(
            audio=self.audio_features(batch),  # (B, Tp+T, L, C)
            id_feat=make_id_feat(batch["kp"], batch["ref_motion"]),  # (B, 133)
            context=batch["motion"][:, : self.cfg.model.tp],  # (B, Tp, 70)
        )

    # ---------------------------------------------------------------------------------- steps

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        cond = self.condition(batch)
        drops = Drops(context=~batch["has_context"])  # clips cut at their start: the start token
        if self.cfg.stage == "stage2":
            e = self.cfg.emotion
            drops.audio, cond.emotion = stage_two_condition_drop(batch["emotion"], e.p_drop_both, e.p_drop_emotion)
            drops.augment = True  # the frozen trunk runs in eval mode but keeps context noise
        x0 = batch["motion"][:, self.cfg.model.tp :]
        d = self.cfg.diffusion
        out = training_loss(self.model, self.schedule, x0, cond, drops, velocity_weight=d.velocity_weight,
                            acceleration_weight=d.acceleration_weight)
        b = x0.shape[0]
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=b)
        for key in ("mse_exp", "mse_pose", "velocity", "acceleration"):
            self.log(f"train/{key}", out[key], batch_size=b)
        self._last_loss = out["loss"].detach()
        return out["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Generate each clip's first window exactly as `playmate generate` would (its audio, its first
        frame as the reference, seed = eval.sample_seed + crc32(key)) and compare with the ground truth."""
        gen = MotionGenerator.from_module(self)
        b = len(batch["key"])
        refs = [Reference(batch["ref_raw"][i].float().cpu(), batch["kp"][i].float().cpu()) for i in range(b)]
        seeds = [clip_seed(self.cfg.eval.sample_seed, k) for k in batch["key"]]
        emotions = batch["emotion"].tolist() if gen.has_emotion_controller else None
        feats = batch["audio"][:, self.cfg.model.tp :] if self.cfg.data.audio_source == "precomputed" else None
        raw = gen.generate_batch(batch["wav"].cpu(), refs, seeds, emotions, audio_feats=feats)  # (B, T, 70)
        gt_raw = batch["gt_motion"].float().cpu()  # (B, T, 70)
        pose_mean = batch["pose_mean"].float().cpu()[:, None]  # the clip's own pose statistics, as in training
        mse = (normalize_motion(raw, self.stats, pose_mean) - normalize_motion(gt_raw, self.stats, pose_mean)).square()
        self.log("val/mse", mse.mean().to(self.device), batch_size=b, sync_dist=True)
        self.val_outputs.append({"gen": raw, "gt": gt_raw, "kp": batch["kp"].cpu(), "wav": batch["wav"].cpu(),
                                 "key": batch["key"]})

    def on_validation_epoch_start(self) -> None:
        self.val_outputs = []

    def on_validation_epoch_end(self) -> None:
        if not self.val_outputs:
            return
        lips = self.cfg.eval.lips
        metrics = motion_validation_metrics(self.val_outputs, lips)
        for name, value in metrics.items():
            self.log(f"val/{name}", value, sync_dist=True)
        if self.trainer.is_global_zero and not getattr(self, "_lips_logged", False):
            log.info(lips_protocol(lips))  # the lip keypoints are also in the logged config (eval.lip_keypoints)
            self._lips_logged = True
        if self.trainer.is_global_zero and self.cfg.logger.log_media:
            log_mouth_plot(self.logger, self.val_outputs[0], self.global_step, lips)
            if self.cfg.eval.val_video:
                log_sample_media(self.logger, self.val_outputs[0], self.global_step, self.cfg.eval.val_video_seconds,
                                 Path(self.trainer.default_root_dir) / "val_media")

    # ---------------------------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["motion_stats"] = self.stats.to_dict()
