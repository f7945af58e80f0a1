"""The evaluator: generate motion for held-out clips, render it, and compute every configured metric.

For every clip (a decoded contract sample, `datamodules.clips`):
    clip audio + reference (first) frame ─► `MotionGenerator` (the one generation path; fixed
    per-clip seed; stage two: the clip's emotion label through nested CFG) ─► raw motion
    → motion statistics of generated and ground-truth motion (no network)
    → when a face model is configured and the clip has video: render the generated motion from the
      clip's first video frame (its motion/kp from the shard), compare with the ground-truth frames:
      FID, FVD (I3D), Sync-C/D (SyncNet), CSIM (ArcFace), PSNR/SSIM, LPIPS.
Feature networks come from configured local weights files. With `random_weights=True` the
unconfigured ones are built with deterministic random weights, and the result says RANDOM WEIGHTS
everywhere (protocol, title, W&B). Metrics whose network is neither configured nor allowed random
are skipped, and the reason is recorded.

Distributed: every rank evaluates its own clips (`split_for_rank`), metric states are synced by
torchmetrics in `compute()` (a collective: every rank must call `run`), per-clip rows are gathered
to every rank.

Shape legend: T frames (25 fps) · S = 640·T audio samples (16 kHz) · H = W = eval_size pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from configs.schema import EvaluationConfig
from datamodules.clips import EvalClip
from models.clock import SAMPLES_PER_FRAME
from pl_modules.evaluation.sync_crop import sync_frames, sync_metrics, sync_resolution
from pl_modules.inference.generator import MotionGenerator, clip_seed
from pl_modules.inference.inputs import Reference

log = logging.getLogger(__name__)

RANDOM_TITLE = "RANDOM-WEIGHT FEATURE NETWORKS — numbers are not comparable"
RANDOM_SEED = 0  # random-weight networks are deterministic: same numbers for the same inputs


def _random(build: Callable[[], nn.Module]) -> nn.Module:
    """A network with deterministic random weights (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return build().eval()


def build_metrics(cfg: EvaluationConfig) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """(metrics by name, names using random weights, skipped name → reason) for the configured set."""
    from metrics.csim import CSIM, IResNet
    from metrics.fid import FID, ResizedFeatures
    from metrics.fvd import FVD, FVDConfig, InceptionI3d
    from metrics.image import build_lpips, build_psnr, build_ssim
    from metrics.motion import MotionMetrics
    from models.syncnet import SyncNet

    want = set(cfg.metrics)
    out: dict[str, Any] = {}
    random_used: list[str] = []
    skipped: dict[str, str] = {}

    def unavailable(name: str, flag: str) -> bool:
        if cfg.random_weights:
            random_used.append(name)
            return False
        skipped[name] = f"no weights configured (set {flag}, or allow random weights)"
        return True

    if "motion" in want:
        from metrics.temporal import TemporalRealism

        out["motion"], out["motion_gt"] = MotionMetrics(lips=cfg.lips), MotionMetrics(lips=cfg.lips)
        out["temporal"] = TemporalRealism()  # generated / ground-truth velocity and acceleration
    if not cfg.face_model_dir:  # every other metric compares rendered frames
        for name in sorted(want - {"motion"}):
            skipped[name] = "needs rendered frames: no face model configured (face_model_dir / --face-model)"
        return out, random_used, skipped
    if "fid" in want:
        if cfg.fid_weights:
            out["fid"] = FID(2048, weights_path=cfg.fid_weights)
        elif not unavailable("fid", "fid_weights / --feature-net"):
            net = _random(lambda: IResNet("r18"))
            out["fid"] = FID(ResizedFeatures(net, 112, 512,
                                             "RANDOM WEIGHTS (IResNet-18 stand-in, 512-d) — not a real metric"))
    if "fvd" in want:
        fc = FVDConfig(weights_path=cfg.fvd_weights, clip_len=cfg.fvd_clip_len, clip_sampling=cfg.fvd_clip_sampling)
        if cfg.fvd_weights:
            out["fvd"] = FVD.from_config(fc)
        elif not unavailable("fvd", "fvd_weights / --i3d"):
            out["fvd"] = FVD(_random(InceptionI3d), fc)
    if "sync" in want:
        net = None
        if cfg.syncnet_weights:
            net = SyncNet.from_file(cfg.syncnet_weights)
        elif not unavailable("sync", "syncnet_weights / --syncnet"):
            net = _random(SyncNet)
        if net is not None:
            out.update(sync_metrics(cfg, net))  # whole-crop or S3FD face-track crop (cfg.sync_crop_mode)
    if "csim" in want:
        if cfg.arcface_weights:
            out["csim"] = CSIM(IResNet.from_file(cfg.arcface_weights, cfg.arcface_arch),
                               weights_path=cfg.arcface_weights)
        elif not unavailable("csim", "arcface_weights / --arcface"):
            out["csim"] = CSIM(_random(lambda: IResNet("r18")))
    if "psnr" in want:
        out["psnr"] = build_psnr(1.0)
    if "ssim" in want:
        out["ssim"] = build_ssim(1.0)
    if "lpips" in want:
        if cfg.lpips_weights:
            out["lpips"] = build_lpips(cfg.lpips_weights)
        else:
            skipped["lpips"] = "no AlexNet weights configured (set lpips_weights; needs torchvision)"
    return out, random_used, skipped


# ------------------------------------------------------------------------------------------------
# Frames
# ------------------------------------------------------------------------------------------------


def resize_frames(frames: np.ndarray, size: int) -> Tensor:
    """uint8 (T, H, W, 3) → uint8 (T, 3, size, size), bilinear with antialias (up- or down-scaling)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def _bgr224(frames: Tensor) -> Tensor:
    """uint8 (T, 3, H, W) RGB → uint8 (T, 224, 224, 3) BGR for SyncNet."""
    return resize_frames(frames.permute(0, 2, 3, 1).numpy(), 224).permute(0, 2, 3, 1).flip(-1).contiguous()


# ------------------------------------------------------------------------------------------------
# The evaluator
# ------------------------------------------------------------------------------------------------


def generate_clip(gen: MotionGenerator, clip: EvalClip, sample_seed: int, steps: int | None = None) -> Tensor:
    """Raw generated motion (T, 70) for a held-out clip: its audio, its first frame as the reference,
    seed = sample_seed + crc32(key), and (stage-two models) its emotion label."""
    ref = Reference(torch.from_numpy(clip.motion[0]), torch.from_numpy(clip.kp))
    label = clip.meta.get("emotion") if gen.has_emotion_controller else None
    return gen.generate(clip.wav, ref, seed=clip_seed(sample_seed, clip.key), emotion=label, steps=steps,
                        audio_feats=clip.audio_feats)


@dataclass
class EvalResult:
    """Global scalars, per-clip rows (all ranks), the protocol, and this rank's sample clips."""

    scalars: dict[str, float]
    per_clip: list[dict[str, Any]]
    protocol: dict[str, Any]
    random_weights: bool
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def title(self) -> str:
        return RANDOM_TITLE if self.random_weights else "Evaluation"


class Evaluator:
    """Holds the metric networks (never registered in a LightningModule) and runs the evaluation.

    `metrics` / `random_nets` inject prebuilt metrics (tests, stand-in networks; random_nets names
    those with random weights) and `face_model` a renderer; by default everything is built from the
    config's weights files.
    """

    def __init__(
        self,
        config: EvaluationConfig,
        device: str | torch.device = "cpu",
        metrics: dict[str, Any] | None = None,
        random_nets: Sequence[str] = (),
        face_model: Any = None,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        if metrics is None:
            metrics, random_used, self.skipped = build_metrics(config)
        else:
            random_used, self.skipped = list(random_nets), {}
        self.metrics = {k: m.to(self.device) for k, m in metrics.items()}
        self.random_used = sorted(set(random_used))
        self.face_model = face_model  # anything with FaceModel.render's signature (tests inject stand-ins)
        self.face_info: dict[str, Any] = {"configured": face_model is not None, "dir": "injected", "output": "injected"}
        if face_model is None and config.face_model_dir:
            self._load_face_model()

    def _load_face_model(self) -> None:
        from models.liveportrait import face_model as fm
        from models.liveportrait.loading import CHECKPOINT_FILES, load_face_model, resolve_base_models
        from models.weights import sha256_file

        cfg = fm.FaceModelConfig.tiny() if self.config.face_model_preset == "tiny" else None
        self.face_model = load_face_model(self.config.face_model_dir, self.device, cfg=cfg)
        base = resolve_base_models(self.config.face_model_dir)
        self.face_info = {
            "configured": True, "dir": str(base), "preset": self.config.face_model_preset,
            "files": {f: sha256_file(base / f) for f in CHECKPOINT_FILES.values()},
            "output": "512x512 RGB (LivePortrait SPADE decoder)",
        }

    # -------------------------------------------------------------------------------------- one clip

    def _clip(self, gen: MotionGenerator, clip: EvalClip, keep: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
        from datamodules.video import decode_frames
        from metrics.motion import motion_jitter, mouth_audio_correlation, pose_distance
        from metrics.temporal import temporal_ratios

        cfg, m = self.config, self.metrics
        gen_motion = generate_clip(gen, clip, cfg.sample_seed, cfg.sampling_steps)  # (T, 70)
        gt_motion = torch.from_numpy(clip.motion)
        kp, wav = torch.from_numpy(clip.kp), torch.from_numpy(clip.wav)
        row: dict[str, Any] = {"key": clip.key, "dataset": clip.meta.get("dataset"), "frames": clip.num_frames,
                               "clip_frames": int(clip.meta.get("num_frames", clip.num_frames)),
                               "emotion": clip.meta.get("emotion")}
        if "motion" in m:
            m["motion"].update(gen_motion[None], kp[None], wav[None], gt_motion[None])
            m["motion_gt"].update(gt_motion[None], kp[None], wav[None])
        if "temporal" in m:
            m["temporal"].update(gen_motion[None], gt_motion[None])
        row["mouth_audio_r"], row["mouth_audio_lag"] = mouth_audio_correlation(gen_motion, kp, wav, lips=cfg.lips)
        row["mouth_audio_r_gt"] = mouth_audio_correlation(gt_motion, kp, wav, lips=cfg.lips)[0]
        row["exp_acceleration"] = motion_jitter(gen_motion)["exp_acceleration"]
        row["pose_angle_l1_deg"] = pose_distance(gen_motion, gt_motion)["pose_angle_l1_deg"]
        row.update(temporal_ratios(gen_motion, gt_motion))
        sample = ({"key": clip.key, "gen_motion": gen_motion, "gt_motion": gt_motion, "kp": kp, "wav": clip.wav,
                   "meta": clip.meta, "lips": cfg.lips} if keep else None)
        if self.face_model is None or clip.mp4 is None:
            return row, sample

        gt_frames = decode_frames(clip.mp4)  # (T', 256, 256, 3)
        n = min(clip.num_frames, gt_frames.shape[0])
        rendered = self.face_model.render(gt_frames[0], clip.motion[0], clip.kp, gen_motion[:n].numpy(),
                                          batch_size=cfg.render_batch_size)  # (n, 512, 512, 3)
        fake = resize_frames(rendered, cfg.eval_size).to(self.device)  # (n, 3, H, W) uint8
        real = resize_frames(gt_frames[:n], cfg.eval_size).to(self.device)
        row["rendered_frames"], row["gt_size"] = n, int(gt_frames.shape[1])
        self._frame_metrics(fake, real, wav[: n * SAMPLES_PER_FRAME], row)
        if sample is not None:
            sample.update(gen_frames=fake.cpu(), gt_frames=real.cpu())
        return row, sample

    def _frame_metrics(self, fake: Tensor, real: Tensor, wav: Tensor, row: dict[str, Any]) -> None:
        m = self.metrics
        if "fid" in m:
            m["fid"].update(fake, real=False)
            m["fid"].update(real, real=True)
        if "fvd" in m:
            if fake.shape[0] >= m["fvd"].config.clip_len:
                m["fvd"].update(fake[None], real=False)
                m["fvd"].update(real[None], real=True)
            else:
                row["fvd_skipped"] = True
        if "sync" in m:
            for name, frames in (("sync", fake), ("sync_gt", real)):
                metric = m[name]
                before = len(metric.conf)
                metric.update(sync_frames(metric, frames, _bgr224), wav)
                if len(metric.conf) > before:
                    suffix = name.removeprefix("sync")  # "" or "_gt"
                    row[f"sync_c{suffix}"] = float(metric.conf[-1])
                    row[f"sync_d{suffix}"] = float(metric.min_dist[-1])
        if "csim" in m:
            faces = F.interpolate(fake.float(), size=(112, 112), mode="bilinear",
                                  antialias=True).round().to(torch.uint8)
            src = F.interpolate(real[:1].float(), size=(112, 112), mode="bilinear",
                                antialias=True).round().to(torch.uint8)
            m["csim"].update(src, faces)
        f01, r01 = fake.float() / 255.0, real.float() / 255.0
        for name in ("psnr", "ssim", "lpips"):
            if name in m:
                m[name].update(f01, r01)

    # -------------------------------------------------------------------------------------- all clips

    def run(self, generator: MotionGenerator, clips: Sequence[EvalClip]) -> EvalResult:
        """Evaluate this rank's clips; every rank must call it (compute() is a collective)."""
        for metric in self.metrics.values():
            metric.reset()
        rows, samples = [], []
        for i, clip in enumerate(clips):
            row, sample = self._clip(generator, clip, keep=i < self.config.num_videos)
            rows.append(row)
            if sample is not None:
                samples.append(sample)
        scalars, not_computed = self._compute()
        rows = _gather_rows(rows)
        # a random-weight network marks the result only if it produced a number
        random = [n for n in self.random_used if n in self.metrics and n not in not_computed]
        protocol = self._protocol(rows, not_computed, random, generator)
        protocol["all_clips_of_data"] = getattr(clips, "complete", None)  # None: a rank's share (unknown)
        return EvalResult(scalars, rows, protocol, bool(random), samples)

    def _compute(self) -> tuple[dict[str, float], dict[str, str]]:
        out: dict[str, float] = {}
        failed: dict[str, str] = {}
        for name, metric in self.metrics.items():
            if not metric.update_called and name not in ("fid", "fvd"):
                # update_called is per rank; the Fréchet metrics may have samples on other ranks only
                failed[name] = "no samples on this rank (no rendered clips?)"
            try:
                value = metric.compute()  # collective: synced states
            except Exception as e:  # fewer than 2 samples, no updates anywhere, …
                failed[name] = f"{type(e).__name__}: {e}"
                continue
            if isinstance(value, dict):
                suffix = "_gt" if name.endswith("_gt") else ""
                base = "sync" if name.startswith("sync") else ""
                for k, v in value.items():
                    key = f"{base}_{k.removeprefix('sync_')}{suffix}" if base else f"{k}{suffix}"
                    out[key] = float(v)
            else:
                out[name] = float(value)
            failed.pop(name, None)
        out.pop("num_clips_gt", None)  # same as num_clips
        return {k: v for k, v in out.items() if not (math.isnan(v) and k.endswith("_std"))}, failed

    def _protocol(self, rows: list[dict[str, Any]], not_computed: dict[str, str], random: list[str],
                  generator: MotionGenerator) -> dict[str, Any]:
        cfg, d, m = self.config, generator.config.diffusion, generator.config.model
        per_metric: dict[str, Any] = {}
        for name, metric in self.metrics.items():
            proto = getattr(metric, "protocol", None)
            per_metric[name] = (proto() if callable(proto)
                                else getattr(metric, "lpips_protocol", {"metric": type(metric).__name__}))
        rendered = [r for r in rows if "rendered_frames" in r]
        return {
            "title": RANDOM_TITLE if random else "Evaluation",
            "name": cfg.protocol,  # the named protocol the settings started from (configs.evaluation.PROTOCOLS)
            "random_weights": random,  # networks with random weights that produced numbers here
            "settings": asdict(cfg),
            "lip_keypoints": {"upper": cfg.lips[0], "lower": cfg.lips[1]},
            "datasets": sorted({str(r.get("dataset")) for r in rows}),
            "clips": len(rows),
            "clips_cut": sum(1 for r in rows if r["frames"] < r.get("clip_frames", r["frames"])),
            "gt_frame_sizes": sorted({r["gt_size"] for r in rendered}),
            "generated_frames": int(sum(r["frames"] for r in rows)),
            "rendered_clips": len(rendered),
            "rendered_frames": int(sum(r["rendered_frames"] for r in rendered)),
            "fvd_skipped_clips": sum(1 for r in rows if r.get("fvd_skipped")),
            "generation": f"whole clips (≤ {cfg.max_frames or 'all'} frames), windows of {m.t_window} "
                          f"(context {m.tp}), {d.sampler} {cfg.sampling_steps or d.sampling_steps} steps, "
                          f"eta {d.eta}, w_a {d.w_a}, w_e {d.w_e} (stage two only), "
                          f"seed = {cfg.sample_seed} + crc32(key)",
            "resolutions": {
                "motion": "raw 70-d motion (no image)",
                "fid": f"generated 512 → {cfg.eval_size} and GT mp4 "
                       f"{'/'.join(str(g) for g in sorted({r['gt_size'] for r in rendered})) or '256'} → "
                       f"{cfg.eval_size}, then the network's own resize",
                "fvd": f"{cfg.eval_size} frames → I3D resize (see FVD protocol), {cfg.fvd_clip_len}-frame clips: "
                       + {"first": "the first per video", "random": "one at a seeded random offset per video",
                          "all_non_overlapping": "every non-overlapping one"}[cfg.fvd_clip_sampling],
                "sync": sync_resolution(cfg, self.metrics),
                "csim": f"{cfg.eval_size} → 112x112 whole face crop (no 5-point alignment); source = first GT frame",
                "psnr_ssim_lpips": f"generated vs GT frame t at {cfg.eval_size}x{cfg.eval_size}, [0, 1]",
            },
            "face_model": self.face_info,
            "metrics": per_metric,
            "skipped": {**self.skipped, **not_computed},
        }


def _gather_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-clip rows of every rank (all_gather_object when a process group is running)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return rows
    world = torch.distributed.get_world_size()
    if world == 1:
        return rows
    gathered: list[list[dict[str, Any]] | None] = [None] * world
    torch.distributed.all_gather_object(gathered, rows)
    return sorted((r for part in gathered for r in part or []), key=lambda r: r["key"])
