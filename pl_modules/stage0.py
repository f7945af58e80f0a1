"""Stage zero (docs/stage-zero.md): fine-tune the face model's motion extractor M (optionally W, G, F) with
Playmate's pose/expression cross-transfer loss, the LivePortrait family's reconstruction terms and
keypoint priors, starting from the public LivePortrait checkpoints.

The face model is a registered submodule (`face.*` in checkpoints, so an export is self-contained); it
always runs in eval mode (BatchNorm statistics and spectral-norm vectors stay those of the release), and
only the modules named in `stage0.trainable` get gradients. The VGG19 of the perceptual losses and the
frozen copy of the public M (the pose anchor's teacher) are not submodules: they never enter a
checkpoint, the optimiser or DeepSpeed's bf16 cast. Validation logs held-out L_p, the reconstruction
error and the disentanglement probe (`models.decoupling.evaluate_pairs`) before training (step 0) and
every `trainer.val_every_n_steps`, with images of the cross-transfer pairs on W&B.
"""

from __future__ import annotations

import copy
import itertools
import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from configs.loader import ConfigError, ConfigPathError, to_container
from configs.schema import ExperimentConfig
from datamodules.pairs import FramePairDataModule
from models.decoupling import (
    PROBE_KEYS,
    LossWeights,
    PerceptualSpec,
    evaluate_pairs,
    stage_zero_losses,
    summarize_probe,
)
from models.liveportrait import PRESETS, FaceModel, load_face_model
from models.vgg import VGG19, load_vgg19
from models.weights import WeightsError
from pl_modules.module import TrainableModule

log = logging.getLogger(__name__)

VAL_SUMS = ("lp", "rec_l1", "rec_perc", *PROBE_KEYS)


def load_start_face_model(cfg: ExperimentConfig) -> FaceModel:
    """The public LivePortrait weights of `stage0.face_model_dir`, loaded strictly; errors name the key."""
    s = cfg.stage0
    try:
        return load_face_model(s.face_model_dir, cfg=PRESETS[s.face_model_preset]())
    except FileNotFoundError as e:
        raise ConfigPathError(f"stage0.face_model_dir={s.face_model_dir}: {e}") from None
    except WeightsError as e:
        raise ConfigError(f"stage0.face_model_dir={s.face_model_dir}: {e} (stage0.face_model_preset="
                          f"{s.face_model_preset})") from None


def load_perceptual_net(cfg: ExperimentConfig) -> VGG19:
    try:
        return load_vgg19(cfg.stage0.vgg_weights, "stage0.vgg_weights", width=cfg.stage0.vgg_width)
    except FileNotFoundError as e:
        raise ConfigPathError(str(e)) from None
    except WeightsError as e:
        raise ConfigError(str(e)) from None


class StageZeroModule(TrainableModule):
    """The motion-decoupling fine-tune of the face model on frame pairs (`datamodules.pairs.PairBatch`)."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        s = cfg.stage0
        self.save_hyperparameters({"config": to_container(cfg)})
        self.face = load_start_face_model(cfg)
        self.face.frozen = True  # eval mode always, also when Lightning calls .train()
        for name in s.trainable:
            getattr(self.face, name).requires_grad_(True)
        self.weights = LossWeights(s.w_cross, s.w_rec_l1, s.w_rec_perc, s.w_equivariance, s.w_deformation,
                                   s.w_pose_anchor)
        self.spec = PerceptualSpec(tuple(s.perceptual_scales), tuple(s.perceptual_layer_weights))
        # Not registered: outside checkpoints, the optimiser and DeepSpeed's cast (fp32, moved on use).
        self._vgg = [load_perceptual_net(cfg)]
        self._teacher = [copy.deepcopy(self.face.motion_extractor).requires_grad_(False)] if s.w_pose_anchor else []
        self._val_sums: dict[str, float] = {}
        self._val_count = 0
        self._val_media: list[np.ndarray] = []
        self.initial_val: dict[str, float] | None = None  # the validation metrics at step 0

    # ---------------------------------------------------------------------------------- helpers

    @property
    def vgg(self) -> VGG19:
        return self._vgg[0].to(self.device)

    @property
    def teacher(self) -> torch.nn.Module | None:
        return self._teacher[0].to(self.device) if self._teacher else None

    def images(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """uint8 (B, 256, 256, 3) frames i, j → (B, 3, S, S) in [0, 1] (S = stage0.image_size), in the face
        model's dtype (bf16 under DeepSpeed)."""
        dtype, size = self.face.motion_extractor.detector.fc_exp.weight.dtype, self.cfg.stage0.image_size
        out = []
        for k in ("src", "drv"):
            x = batch[k].to(self.device).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, 256, 256)
            if x.shape[-1] != size:
                x = F.interpolate(x, size=(size, size), mode="area")
            out.append(x.to(dtype))
        return out[0], out[1]

    def throughput_counts(self, batch: dict[str, Any]) -> tuple[int, int]:
        b = batch["src"].shape[0]
        return b, 2 * b

    # ---------------------------------------------------------------------------------- training

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        img_i, img_j = self.images(batch)
        terms, _ = stage_zero_losses(self.face, self.vgg, img_i, img_j, self.weights, self.spec, self.teacher,
                                     self.cfg.stage0.equivariance_sigma)
        b, loss = img_i.shape[0], terms.pop("loss")
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=b)
        self._last_loss = loss.detach()
        return loss

    # ---------------------------------------------------------------------------------- validation

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._validate_batch(batch)

    def on_validation_epoch_start(self) -> None:
        self._reset_validation()

    def on_validation_epoch_end(self) -> None:
        metrics = self._finish_validation()
        if metrics is None:
            return
        for name, value in metrics.items():
            self.log(f"val/{name}", value)
        self._log_media(self.global_step)

    def on_train_start(self) -> None:
        """Validate once before the first step (a fresh run only): the "before" of every val/ metric."""
        if self.global_step or not self.cfg.trainer.val_every_n_steps or self.initial_val is not None:
            return
        loader = self.trainer.datamodule.val_dataloader() if self.trainer.datamodule is not None else []
        limit = self.trainer.limit_val_batches  # the same batches (pairs) as every later validation
        self._reset_validation()
        with torch.no_grad():
            for batch in itertools.islice(loader, limit if isinstance(limit, int) else None):
                self._validate_batch(batch)
        self.initial_val = self._finish_validation()
        if self.initial_val is None:
            return
        log.info("stage zero at step 0: %s", ", ".join(f"{k} {v:.4g}" for k, v in self.initial_val.items()))
        if self.logger and self.trainer.is_global_zero:
            self.logger.log_metrics({f"val/{k}": v for k, v in self.initial_val.items()}, step=0)
        self._log_media(0)

    def _reset_validation(self) -> None:
        self._val_sums, self._val_count, self._val_media = dict.fromkeys(VAL_SUMS, 0.0), 0, []

    def _validate_batch(self, batch: dict[str, Any]) -> None:
        img_i, img_j = self.images(batch)
        values, renders = evaluate_pairs(self.face, self.vgg, img_i, img_j, self.spec)
        for k in VAL_SUMS:
            self._val_sums[k] += float(values[k].sum())
        self._val_count += img_i.shape[0]
        room = self.cfg.stage0.log_pairs - sum(len(m) for m in self._val_media)
        if room > 0 and self.trainer.is_global_zero:
            rows = [img_i, img_j, renders.rec_j, renders.pose_ij, renders.exp_ji]  # (B, 3, 256, 256) each
            strip = torch.cat([r[:room].float().clamp(0, 1) for r in rows], dim=3)  # (b, 3, S, 5·S)
            self._val_media.append((strip.permute(0, 2, 3, 1) * 255).to(torch.uint8).cpu().numpy())

    def _finish_validation(self) -> dict[str, float] | None:
        """Sums over this rank's pairs → means over all ranks' pairs, plus the leak ratios (None: no pairs)."""
        values = torch.tensor([self._val_sums[k] for k in VAL_SUMS] + [self._val_count], dtype=torch.float64,
                              device=self.device)
        if self.trainer.world_size > 1:
            values = self.trainer.strategy.reduce(values, reduce_op="sum")
        *sums, count = values.tolist()
        if not count:
            return None
        return summarize_probe(dict(zip(VAL_SUMS, sums)), int(count))

    def _log_media(self, step: int) -> None:
        if not (self._val_media and self.trainer.is_global_zero and self.cfg.logger.log_media):
            return
        from lightning.pytorch.loggers import WandbLogger

        if isinstance(self.logger, WandbLogger):
            grid = np.concatenate([row for strips in self._val_media for row in strips])  # (n·S, 5·S, 3)
            self.logger.log_image("val/cross_transfer", [grid], step=step,
                                  caption=["rows: pairs · columns: frame i, frame j, Î^rec_j (from i), "
                                           "Î^pose_{i,j}, Î^exp_{j,i} (the two L_p images)"])

    # ---------------------------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["stage0_initial_val"] = self.initial_val

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.initial_val = checkpoint.get("stage0_initial_val")


def build_stage_zero(cfg: ExperimentConfig) -> tuple[FramePairDataModule, StageZeroModule]:
    """The datamodule (shards resolved now, so a bad path fails before the Trainer) and the module."""
    dm = FramePairDataModule(cfg.data, cfg.stage0, seed=cfg.seed)
    dm.setup("fit")
    return dm, StageZeroModule(cfg)
