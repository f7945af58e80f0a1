"""The motion-diffusion LightningModule: stage one, and stage two by configuration (docs/training.md).

Stage one trains the audio aligner and the MotionDiT. Stage two attaches the emotion controller,
freezes every stage-one parameter (optionally not the Exp-MLP), and trains with per-sample
condition dropout (audio, emotion) / (audio, ∅) / (∅, ∅). The frozen audio encoder and the networks
are built in `configure_model` (idempotent, as DeepSpeed requires). Normalisation statistics and
the resolved config travel with every checkpoint.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from configs.loader import to_container
from configs.schema import ExperimentConfig
from models.audio import build_audio_encoder
from models.diffusion.loss import training_loss
from models.diffusion.schedule import NoiseSchedule
from models.dit import Condition, Drops, MotionDiT, build_motion_dit, make_id_feat
from models.emotion import build_emotion_controller, freeze_stage_one, stage_two_condition_drop
from models.motion import MotionStats, normalize_motion
from pl_modules.inference.generator import MotionGenerator, clip_seed
from pl_modules.inference.inputs import Reference
from pl_modules.validation import log_mouth_plot, motion_validation_metrics


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
    `cfg.optim`, the gradient-norm and bad-sample logs, and the batch counts of the throughput callback."""

    cfg: ExperimentConfig

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.cfg.optim
        opt = torch.optim.AdamW(self.trainable_parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, partial(lr_factor, warmup=o.warmup_steps, total=self.cfg.trainer.max_steps, decay=o.decay,
                         floor=o.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.trainable_parameters() if p.grad is not None]
        if grads:  # (under DeepSpeed ZeRO the gradients live in the engine's partitions instead)
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            self.log("train/grad_norm", norm, batch_size=1)

    def _log_data_stats(self, batch: dict[str, Any]) -> None:
        if "data_stats" not in batch:
            return
        worker, seen, bad = batch["data_stats"].tolist()
        self._data_stats[worker] = (seen, bad)
        self.log("data/bad_samples", float(sum(v[1] for v in self._data_stats.values())), batch_size=1)

    def throughput_counts(self, batch: dict[str, Any]) -> tuple[int, int]:
        """(samples, frames) of a training batch, for `ThroughputCallback`."""
        raise NotImplementedError

    def flops_per_sample(self) -> float | None:
        """Forward FLOPs of one sample (for MFU), or None when not counted."""
        return None


class MotionDiffusionModule(TrainableModule):
    """ε-prediction diffusion over 70-d motion windows conditioned on audio, identity and context."""

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
        self._data_stats: dict[int, tuple[int, int]] = {}

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
        """(B, Tp+T, L, C) encoder features of the window (computed here for wav batches)."""
        if self.cfg.data.audio_source == "precomputed":
            return batch["audio"].float()
        with torch.no_grad():
            return self.audio_encoder(batch["audio"].float(), batch["motion"].shape[1]).to(batch["motion"].dtype)

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
        out = training_loss(self.model, self.schedule, x0, cond, drops)
        b = x0.shape[0]
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=b)
        self.log("train/mse_exp", out["mse_exp"], batch_size=b)
        self.log("train/mse_pose", out["mse_pose"], batch_size=b)
        self._log_data_stats(batch)
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
        metrics = motion_validation_metrics(self.val_outputs)
        for name, value in metrics.items():
            self.log(f"val/{name}", value, sync_dist=True)
        if self.trainer.is_global_zero and self.cfg.logger.log_media:
            log_mouth_plot(self.logger, self.val_outputs[0], self.global_step)

    # ---------------------------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["motion_stats"] = self.stats.to_dict()
