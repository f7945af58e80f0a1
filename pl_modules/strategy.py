"""How training uses the hardware: the Lightning strategy from the config, DeepSpeed gradient buckets
sized from the model, and what the logged MFU counts (docs/training.md).

DeepSpeed ZeRO-2 copies gradients into a bucket of `reduce_bucket_size` elements during backward and
starts the bucket's reduction (overlap_comm) when it is full. A bucket larger than all trainable
gradients fills only when backward has finished, so nothing overlaps; DeepSpeed's 5e8 default is
6× preset B's 82 M parameters. `trainer.deepspeed_bucket_size: auto` takes a quarter of the
trainable parameter count, clamped to [5e6, 5e8] elements: four buckets, the first three reduced
while backward still runs, each at least 10 MB in bf16 (large enough for NCCL to reach its bandwidth).
"""

from __future__ import annotations

import logging

import torch

from configs.schema import ExperimentConfig, parse_bucket_size
from models.audio import encoder_flops_per_window
from models.dit import MotionDiT, build_motion_dit, count_parameters
from models.emotion import build_emotion_controller, freeze_stage_one

log = logging.getLogger("playmate.strategy")

BUCKET_FRACTION = 0.25  # of the trainable parameters: four buckets per backward
MIN_BUCKET, MAX_BUCKET = 5e6, 5e8  # elements (10 MB / 1 GB in bf16)


def trainable_model(cfg: ExperimentConfig, device: str | torch.device = "meta") -> MotionDiT:
    """The network training builds (stage two: controller attached, stage one frozen), on `device`
    (meta: no memory, no initialisation cost; for counting)."""
    with torch.device(device):
        model = build_motion_dit(cfg.model)
        if cfg.stage == "stage2":
            model.attach_emotion_controller(build_emotion_controller(cfg.emotion, cfg.model))
            freeze_stage_one(model, cfg.emotion.train_exp_head)
    return model


def auto_bucket_size(trainable_params: int) -> int:
    """Gradient bucket (elements) for `trainable_params`: a quarter of them, clamped to [5e6, 5e8]."""
    return int(min(MAX_BUCKET, max(MIN_BUCKET, BUCKET_FRACTION * trainable_params)))


def deepspeed_bucket_size(cfg: ExperimentConfig) -> int:
    """`trainer.deepspeed_bucket_size` in elements: a number as given, or `auto` from the model."""
    given = parse_bucket_size(cfg.trainer.deepspeed_bucket_size)
    if given is not None:
        return int(given)
    return auto_bucket_size(count_parameters(trainable_model(cfg), trainable_only=True))


def flop_accounting(cfg: ExperimentConfig) -> dict[str, float]:
    """Forward FLOPs per training window: what perf/mfu counts, and the frozen encoder it leaves out.

    perf/mfu = samples/s × 3 × `MotionDiT.flops_per_sample` (aligner and any emotion controller
    included) / (GPUs × dense bf16 peak). A wav2vec2 encoder run inside the step (data.audio_source
    = wav) is real GPU work that MFU does not count; with precomputed features it does not run.
    """
    model = trainable_model(cfg)
    frames = cfg.model.tp + cfg.model.t_window
    in_step = cfg.data.audio_source == "wav"
    encoder = float(encoder_flops_per_window(cfg.audio, frames)) if in_step else 0.0
    dit = float(model.flops_per_sample())
    return {"dit_forward_flops": dit, "mfu_flops_per_window": 3.0 * dit, "encoder_forward_flops_in_step": encoder}


def log_flop_accounting(cfg: ExperimentConfig) -> None:
    f = flop_accounting(cfg)
    msg = (f"perf/mfu counts 3 × {f['dit_forward_flops'] / 1e9:.2f} GFLOP per window (MotionDiT forward incl. "
           "the audio aligner, ×3 for forward + backward)")
    if f["encoder_forward_flops_in_step"]:
        msg += (f"; the frozen {cfg.audio.name} encoder runs in the step "
                f"({f['encoder_forward_flops_in_step'] / 1e9:.1f} GFLOP per window, forward only) and is NOT counted")
    log.info(msg)


def build_strategy(cfg: ExperimentConfig, per_rank_batch: int):
    """The Lightning strategy of `trainer.strategy` (DeepSpeed: ZeRO stage, buckets, logging batch size)."""
    t = cfg.trainer
    log_flop_accounting(cfg)
    if t.strategy.startswith("deepspeed"):
        from pl_modules.checkpoint_io import deepspeed_strategy

        bucket = deepspeed_bucket_size(cfg)
        log.info("DeepSpeed ZeRO-%s: reduce/allgather buckets of %.3g elements (trainer.deepspeed_bucket_size=%s)",
                 t.strategy[-1], bucket, t.deepspeed_bucket_size)
        # checkpoint directories are published atomically (pl_modules/checkpoint_io.py)
        return deepspeed_strategy(stage=int(t.strategy[-1]), logging_batch_size_per_gpu=per_rank_batch,
                                  allgather_bucket_size=bucket, reduce_bucket_size=bucket)
    if t.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(process_group_backend="gloo" if t.accelerator == "cpu" else None)
    return "auto"
