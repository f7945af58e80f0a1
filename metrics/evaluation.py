"""Evaluation core shared by the training callback (metrics/callback.py) and `playmate evaluate`.

For every validation clip (a decoded contract sample):
    clip audio → audio features (the model's encoder) → whole-clip motion, window by window, with a
    fixed per-clip seed (stage two: the clip's emotion label through nested CFG) → de-normalised with
    the reference (first) frame's pose as pose mean, as at inference
    → motion statistics of generated and ground-truth motion (no network)
    → when a face model is configured and the clip has video: render the generated motion from the
      clip's first video frame (its motion/kp from the shard), compare with the ground-truth frames:
      FID, FVD (I3D), Sync-C/D (SyncNet), CSIM (ArcFace), PSNR/SSIM, LPIPS.
Feature networks come from configured local weights files. With `random_weights=True` the
unconfigured ones are built with deterministic random weights from this package, and the result
says RANDOM WEIGHTS everywhere (protocol, title, W&B). Metrics whose network is neither configured
nor allowed random are skipped, and the reason is recorded.

Distributed: every rank evaluates its own clips (`split_for_rank`: no clip on two ranks), metric
states are synced by torchmetrics in `compute()` (a collective: every rank must call `run`), and
per-clip rows are gathered to every rank.

Shape legend: T frames (25 fps) · S = 640·T audio samples (16 kHz) · H = W = eval_size pixels.
"""

from __future__ import annotations

import contextlib
import logging
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.diffusion.schedule import DiffusionConfig, NoiseSchedule
from models.diffusion.windowed import generate_windowed
from models.dit import reference_id_feat
from models.emotion import EMOTIONS
from models.motion import POSE, MotionStats, denormalize_motion

log = logging.getLogger(__name__)

RANDOM_TITLE = "RANDOM-WEIGHT FEATURE NETWORKS — numbers are not comparable"
METRICS = ("motion", "fid", "fvd", "sync", "csim", "psnr", "ssim", "lpips")
NETWORK_METRICS = ("fid", "fvd", "sync", "csim", "lpips")
SAMPLES_PER_FRAME = 640
RANDOM_SEED = 0  # random-weight networks are deterministic: same numbers for the same inputs


@dataclass
class EvaluationConfig:
    """Everything that changes an evaluation number (printed in the report's protocol block)."""

    num_clips: int = 8  # validation clips, all ranks together (the first N of the data, in shard order)
    max_frames: int = 250  # frames per clip generated and scored (10 s at 25 fps); 0 = whole clip
    sample_seed: int = 1234  # per-clip noise seed = sample_seed + crc32(clip key): independent of rank split
    sampling_steps: int | None = None  # DDIM steps; None = the checkpoint's diffusion.sampling_steps
    metrics: list[str] = field(default_factory=lambda: list(METRICS))  # subset of METRICS
    face_model_dir: str | None = None  # LivePortrait weights dir (base_models/): enables rendering
    face_model_preset: str = "full"  # "tiny" only for test/demo weights (write_random_weights(cfg="tiny"))
    render_batch_size: int = 8
    eval_size: int = 256  # side at which frames are compared: GT mp4 is native 256, renders (512) downscaled
    fid_weights: str | None = None  # torch-fidelity Inception file (pt_inception-2015-12-05); needs torch-fidelity
    fvd_weights: str | None = None  # i3d_pretrained_400.pt (piergiaj / VideoGPT port)
    fvd_clip_len: int = 16  # I3D clip length (≥ 9); clips shorter than this are not in FVD (counted)
    syncnet_weights: str | None = None  # syncnet_v2.model (joonson/syncnet_python)
    arcface_weights: str | None = None  # insightface arcface_torch backbone.pth
    arcface_arch: str = "r100"
    lpips_weights: str | None = None  # alexnet-owt-7be5be79.pth; needs torchvision
    random_weights: bool = False  # unconfigured networks get random weights (numbers NOT comparable)
    num_videos: int = 2  # clips kept as samples (videos in W&B, frame strips in the report)

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"eval metrics {unknown} unknown; choose from {list(METRICS)}")
        if self.num_clips < 1 or self.eval_size < 32 or self.render_batch_size < 1:
            raise ValueError(
                f"need num_clips ≥ 1, eval_size ≥ 32, render_batch_size ≥ 1; got {self.num_clips}, "
                f"{self.eval_size}, {self.render_batch_size}"
            )
        if self.face_model_preset not in ("full", "tiny"):
            raise ValueError(f"face_model_preset must be 'full' or 'tiny', got {self.face_model_preset!r}")
        if self.fvd_clip_len < 9:
            raise ValueError(f"fvd_clip_len {self.fvd_clip_len} < 9: I3D yields no logits for shorter clips")

    @classmethod
    def from_schema(cls, eval_cfg: Any) -> EvaluationConfig:
        """From configs.schema.EvalConfig (dataclass, DictConfig or dict): every field of the same
        name is taken, the others keep their defaults (so the schema may grow field by field)."""
        get = eval_cfg.get if isinstance(eval_cfg, dict) else lambda k, d=None: getattr(eval_cfg, k, d)
        values = {f: get(f) for f in cls.__dataclass_fields__ if get(f) is not None}
        if "metrics" in values:
            values["metrics"] = list(values["metrics"])
        return cls(**values)


# ------------------------------------------------------------------------------------------------
# Validation clips and the rank split
# ------------------------------------------------------------------------------------------------


@dataclass
class EvalClip:
    """One validation clip (decoded contract sample, cut to max_frames)."""

    key: str
    motion: np.ndarray  # (T, 70) float32 raw ground-truth motion
    kp: np.ndarray  # (21, 3) canonical keypoints x_c
    wav: np.ndarray  # (S,) int16, S = 640·T
    meta: dict[str, Any]
    mp4: bytes | None = None  # 256×256 face crop video (first T frames are used)
    audio_feats: np.ndarray | None = None  # (T, L, C) precomputed encoder features

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])


def split_for_rank(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    """Items of this rank: items[rank::world]. Ranks are disjoint and together cover every item once."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 ≤ rank < world, got rank {rank}, world {world}")
    return list(items[rank::world])


def load_clips(data: Sequence[str], num_clips: int, max_frames: int = 0, config_key: str = "--data") -> list[EvalClip]:
    """The first `num_clips` valid clips of the shards (dataset dirs, globs, brace URLs), in shard order.

    Every rank loads the same list (deterministic), then takes `split_for_rank`. Bad samples are
    skipped with a warning naming shard and key.
    """
    from pathlib import Path

    from datamodules.contract import ContractError, decode_sample, validate_sample
    from datamodules.motion_wds import resolve_shards
    from datamodules.shards import iter_tar_samples

    clips: list[EvalClip] = []
    bad = 0
    for url in resolve_shards(list(data), config_key):
        for raw in iter_tar_samples(Path(url)):
            try:
                s = validate_sample(decode_sample(raw))
            except ContractError as e:
                bad += 1
                log.warning("evaluation: skipping bad sample (%s)", e)
                continue
            n = s["motion"].shape[0] if max_frames <= 0 else min(max_frames, s["motion"].shape[0])
            feats = s.get("audio_feats")
            clips.append(EvalClip(
                key=s["__key__"], motion=s["motion"][:n].astype(np.float32), kp=s["kp"].astype(np.float32),
                wav=s["wav"][: n * SAMPLES_PER_FRAME], meta=s["meta"], mp4=s.get("mp4"),
                audio_feats=None if feats is None else feats[:n],
            ))
            if len(clips) >= num_clips:
                return clips
    if not clips:
        raise ValueError(f"{config_key}: {list(data)} held no valid clip ({bad} bad samples)")
    return clips


# ------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------


def clip_seed(base: int, key: str) -> int:
    """Per-clip seed: the same clip gets the same noise whatever the rank split."""
    return (base + zlib.crc32(key.encode())) % (2**63 - 1)


@dataclass
class MotionGenerator:
    """A motion model with what whole-clip generation needs (built from a module or a checkpoint)."""

    model: nn.Module
    stats: MotionStats
    diffusion: DiffusionConfig
    t_window: int
    tp: int
    audio_features: Callable[[EvalClip, torch.device], Tensor]  # clip → (1, T, L, C) on device

    @classmethod
    def from_config(cls, model: nn.Module, config: dict[str, Any], stats: MotionStats) -> MotionGenerator:
        """From a checkpoint's config dict (pl_modules.checkpoints.load_motion_model)."""
        encoder: list[nn.Module] = []

        def features(clip: EvalClip, device: torch.device) -> Tensor:
            if config["data"].get("audio_source", "wav") == "precomputed":
                if clip.audio_feats is None:
                    raise ValueError(f"{clip.key}: the model uses precomputed audio features but the clip has no audio.npy")
                return torch.from_numpy(clip.audio_feats.astype(np.float32))[None].to(device)
            if not encoder:
                from models.audio import AudioEncoderConfig, build_audio_encoder

                encoder.append(build_audio_encoder(AudioEncoderConfig(**config["audio"])).eval().requires_grad_(False))
            wav = torch.from_numpy(clip.wav.astype(np.float32) / 32768.0)[None].to(device)  # (1, S)
            with torch.no_grad():
                return encoder[0].to(device)(wav, clip.num_frames).float()  # (1, T, L, C)

        m = config["model"]
        return cls(model, stats, DiffusionConfig(**config["diffusion"]), m["t_window"], m["tp"], features)

    @classmethod
    def from_module(cls, module: Any) -> MotionGenerator:
        """From a training MotionDiffusionModule: its (possibly EMA-swapped) weights and audio encoder."""

        def features(clip: EvalClip, device: torch.device) -> Tensor:
            t = clip.num_frames
            if module.cfg.data.audio_source == "precomputed":
                audio = torch.from_numpy(clip.audio_feats.astype(np.float32))[None]
            else:
                audio = torch.from_numpy(clip.wav.astype(np.float32) / 32768.0)[None]  # (1, S)
            batch = {"audio": audio.to(device), "motion": torch.zeros(1, t, 70, device=device)}
            return module.audio_features(batch).float()  # (1, T, L, C)

        c = module.cfg
        return cls(module.model, module.stats, c.diffusion, c.model.t_window, c.model.tp, features)

    @torch.no_grad()
    def generate(self, clip: EvalClip, seed: int, steps: int | None = None) -> Tensor:
        """Raw generated motion (T, 70) float32 on CPU for the clip's audio and reference frame."""
        device = next(self.model.parameters()).device
        d = self.diffusion
        first = torch.from_numpy(clip.motion[0]).float()  # (70,) reference frame
        id_feat = reference_id_feat(torch.from_numpy(clip.kp).float()[None], first[None], self.stats).to(device)  # (1, 133)
        emotion, w_e = None, None
        label = clip.meta.get("emotion")
        if getattr(self.model, "emotion_controller", None) is not None and label is not None:
            emotion, w_e = torch.tensor([EMOTIONS.index(label)], device=device), d.w_e
        was_training = self.model.training
        self.model.eval()
        dtype = next(self.model.parameters()).dtype  # bf16 under DeepSpeed bf16: sample in autocast
        amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
        try:
            with amp:
                x = generate_windowed(
                    self.model, NoiseSchedule.from_config(d), self.audio_features(clip, device), id_feat,
                    self.t_window, self.tp, num_frames=clip.num_frames, emotion=emotion, sampler=d.sampler,
                    steps=steps or d.sampling_steps, eta=d.eta, w_a=d.w_a, w_e=w_e,
                    generator=torch.Generator(device).manual_seed(seed),
                )  # (1, T, 70) normalised
        finally:
            self.model.train(was_training)
        return denormalize_motion(x[0].float().cpu(), self.stats, first[POSE])  # (T, 70)


# ------------------------------------------------------------------------------------------------
# Feature networks and metrics
# ------------------------------------------------------------------------------------------------


class ResizedFeatures(nn.Module):
    """uint8 (N, 3, H, W) → resize to size×size, [−1, 1] → net → (N, D): an injected FID feature network."""

    def __init__(self, net: nn.Module, size: int, num_features: int, weights_note: str) -> None:
        super().__init__()
        self.net, self.size, self.num_features, self.weights_note = net, size, num_features, weights_note
        self.resize_mode = f"bilinear antialias to {size}x{size}, x/127.5-1"

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x.float(), size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return self.net(x / 127.5 - 1.0).double()  # (N, D)


def _random(build: Callable[[], nn.Module]) -> nn.Module:
    """A network with deterministic random weights (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return build().eval()


def build_metrics(cfg: EvaluationConfig) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """(metrics by name, names using random weights, skipped name → reason) for the configured set."""
    from metrics.csim import CSIM, IResNet
    from metrics.fid import FID
    from metrics.fvd import FVD, FVDConfig, InceptionI3d
    from metrics.image import build_lpips, build_psnr, build_ssim
    from metrics.motion import MotionMetrics
    from metrics.sync import SyncMetric, SyncNet

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
        out["motion"], out["motion_gt"] = MotionMetrics(), MotionMetrics()
    if not cfg.face_model_dir:  # every other metric compares rendered frames
        for name in sorted(want - {"motion"}):
            skipped[name] = "needs rendered frames: no face model configured (face_model_dir / --face-model)"
        return out, random_used, skipped
    if "fid" in want:
        if cfg.fid_weights:
            out["fid"] = FID(2048, weights_path=cfg.fid_weights)
        elif not unavailable("fid", "fid_weights / --feature-net"):
            net = _random(lambda: IResNet("r18"))
            out["fid"] = FID(ResizedFeatures(net, 112, 512, "RANDOM WEIGHTS (IResNet-18 stand-in, 512-d) — not a real metric"))
    if "fvd" in want:
        fc = FVDConfig(weights_path=cfg.fvd_weights, clip_len=cfg.fvd_clip_len)
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
            crop = "whole 256x256 face crop resized to 224x224 (LRS protocol, none_resize_224), BGR"
            for name in ("sync", "sync_gt"):
                out[name] = SyncMetric(net, weights_path=cfg.syncnet_weights, crop=crop)
    if "csim" in want:
        if cfg.arcface_weights:
            out["csim"] = CSIM(IResNet.from_file(cfg.arcface_weights, cfg.arcface_arch), weights_path=cfg.arcface_weights)
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

        cfg, m = self.config, self.metrics
        gen_motion = gen.generate(clip, clip_seed(cfg.sample_seed, clip.key), cfg.sampling_steps)  # (T, 70)
        gt_motion = torch.from_numpy(clip.motion)
        kp, wav = torch.from_numpy(clip.kp), torch.from_numpy(clip.wav)
        row: dict[str, Any] = {"key": clip.key, "frames": clip.num_frames, "emotion": clip.meta.get("emotion")}
        if "motion" in m:
            m["motion"].update(gen_motion[None], kp[None], wav[None], gt_motion[None])
            m["motion_gt"].update(gt_motion[None], kp[None], wav[None])
        row["mouth_audio_r"], row["mouth_audio_lag"] = mouth_audio_correlation(gen_motion, kp, wav)
        row["mouth_audio_r_gt"] = mouth_audio_correlation(gt_motion, kp, wav)[0]
        row["exp_acceleration"] = motion_jitter(gen_motion)["exp_acceleration"]
        row["pose_angle_l1_deg"] = pose_distance(gen_motion, gt_motion)["pose_angle_l1_deg"]
        sample = {"key": clip.key, "gen_motion": gen_motion, "gt_motion": gt_motion, "kp": kp, "wav": clip.wav} if keep else None
        if self.face_model is None or clip.mp4 is None:
            return row, sample

        gt_frames = decode_frames(clip.mp4)  # (T', 256, 256, 3)
        n = min(clip.num_frames, gt_frames.shape[0])
        rendered = self.face_model.render(gt_frames[0], clip.motion[0], clip.kp, gen_motion[:n].numpy(),
                                          batch_size=cfg.render_batch_size)  # (n, 512, 512, 3)
        fake = resize_frames(rendered, cfg.eval_size).to(self.device)  # (n, 3, H, W) uint8
        real = resize_frames(gt_frames[:n], cfg.eval_size).to(self.device)
        row["rendered_frames"] = n
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
                metric.update(_bgr224(frames.cpu()), wav)
                if len(metric.conf) > before:
                    suffix = name.removeprefix("sync")  # "" or "_gt"
                    row[f"sync_c{suffix}"] = float(metric.conf[-1])
                    row[f"sync_d{suffix}"] = float(metric.min_dist[-1])
        if "csim" in m:
            faces = F.interpolate(fake.float(), size=(112, 112), mode="bilinear", antialias=True).round().to(torch.uint8)
            src = F.interpolate(real[:1].float(), size=(112, 112), mode="bilinear", antialias=True).round().to(torch.uint8)
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
        cfg, d = self.config, generator.diffusion
        per_metric: dict[str, Any] = {}
        for name, metric in self.metrics.items():
            proto = getattr(metric, "protocol", None)
            per_metric[name] = proto() if callable(proto) else getattr(metric, "lpips_protocol", {"metric": type(metric).__name__})
        rendered = [r for r in rows if "rendered_frames" in r]
        return {
            "title": RANDOM_TITLE if random else "Evaluation",
            "random_weights": random,  # networks with random weights that produced numbers here
            "settings": asdict(cfg),
            "clips": len(rows),
            "generated_frames": int(sum(r["frames"] for r in rows)),
            "rendered_clips": len(rendered),
            "rendered_frames": int(sum(r["rendered_frames"] for r in rendered)),
            "fvd_skipped_clips": sum(1 for r in rows if r.get("fvd_skipped")),
            "generation": f"whole clips (≤ {cfg.max_frames or 'all'} frames), windows of {generator.t_window} "
                          f"(context {generator.tp}), {d.sampler} {cfg.sampling_steps or d.sampling_steps} steps, "
                          f"eta {d.eta}, w_a {d.w_a}, w_e {d.w_e} (stage two only), seed = {cfg.sample_seed} + crc32(key)",
            "resolutions": {
                "motion": "raw 70-d motion (no image)",
                "fid": f"generated 512 → {cfg.eval_size} and GT mp4 256 → {cfg.eval_size}, then the network's own resize",
                "fvd": f"{cfg.eval_size} frames → I3D resize (see FVD protocol), first {cfg.fvd_clip_len} frames per clip",
                "sync": f"{cfg.eval_size} → 224x224 BGR, whole face crop (no mouth/S3FD crop)",
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
