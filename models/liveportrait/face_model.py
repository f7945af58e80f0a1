"""FaceModel: the four LivePortrait networks plus the motion API (extract_motion, render).

Shape legend: N frames · K = 21 keypoints · 70 = the motion layout of models.motion.
Inputs are uint8 RGB 256×256 face crops (models.liveportrait.crop); frames become float32 in [0, 1]
without mean/std normalisation, as the public `prepare_source`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from models.liveportrait.appearance import AppearanceConfig, AppearanceFeatureExtractor
from models.liveportrait.motion_extractor import MotionExtractor, MotionExtractorConfig
from models.liveportrait.spade import SPADEConfig, SPADEDecoder
from models.liveportrait.warping import DenseMotionConfig, WarpingConfig, WarpingNetwork
from models.motion import MOTION_DIM, NUM_KP, headpose_bins_to_degrees, join_motion, transform_keypoints

INPUT_SIZE = 256  # face crop side fed to F and M
OUTPUT_SIZE = 512  # rendered frame side (G upscale 2)


@dataclass
class FaceModelConfig:
    """Configs of F, M, W, G; defaults are the public release (`src/config/models.yaml`)."""

    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    motion: MotionExtractorConfig = field(default_factory=MotionExtractorConfig)
    warping: WarpingConfig = field(default_factory=WarpingConfig)
    generator: SPADEConfig = field(default_factory=SPADEConfig)

    @classmethod
    def tiny(cls) -> FaceModelConfig:
        """Narrow channels, same spatial sizes, K = 21 (tests, demo): public I/O shapes but channel widths."""
        return cls(
            appearance=AppearanceConfig(
                block_expansion=8, max_features=32, reshape_channel=2, num_resblocks=1
            ),
            motion=MotionExtractorConfig(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
            warping=WarpingConfig(
                block_expansion=8,
                max_features=32,
                reshape_channel=2,
                dense_motion=DenseMotionConfig(block_expansion=4, max_features=16, compress=2),
            ),
            generator=SPADEConfig(
                block_expansion=8, max_features=32, out_channels=8, spade_nhidden=8, num_middle_blocks=1
            ),
        )

    def validate(self) -> None:
        """Raise ValueError when the four networks would not fit together."""
        a, m, w, g = self.appearance, self.motion, self.warping, self.generator
        if m.num_kp != NUM_KP or w.num_kp != NUM_KP:
            raise ValueError(
                f"num_kp must be {NUM_KP} (motion layout), got motion {m.num_kp}, warping {w.num_kp}"
            )
        if (a.reshape_channel, a.reshape_depth) != (w.reshape_channel, w.dense_motion.reshape_depth):
            raise ValueError(
                f"appearance volume ({a.reshape_channel}, {a.reshape_depth}) must match warping "
                f"reshape_channel/depth ({w.reshape_channel}, {w.dense_motion.reshape_depth})"
            )
        w_out = w.block_expansion * 2**w.num_down_blocks
        g_in = min(g.max_features, g.block_expansion * 2**g.num_down_blocks)
        if w_out != g_in:
            raise ValueError(f"warping output channels {w_out} must equal generator input channels {g_in}")


PRESETS = {"tiny": FaceModelConfig.tiny, "full": FaceModelConfig}


def _as_tensor(x: np.ndarray | Tensor, name: str) -> Tensor:
    if not isinstance(x, (np.ndarray, Tensor)):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    return torch.as_tensor(x)


def frames_to_input(frames: np.ndarray | Tensor) -> Tensor:
    """uint8 RGB (N, 256, 256, 3) → float32 (N, 3, 256, 256) in [0, 1] (public prepare_source)."""
    x = _as_tensor(frames, "frames")
    if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(
            f"frames must be uint8 RGB of shape (N, {INPUT_SIZE}, {INPUT_SIZE}, 3), got {x.dtype} "
            f"{tuple(x.shape)}; crop faces first with models.liveportrait.crop.crop_face"
        )
    x = (x.float() / 255.0).clamp(0, 1)  # (N, 256, 256, 3)
    return x.permute(0, 3, 1, 2).contiguous()  # (N, 3, 256, 256)


def image_to_uint8(img: Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] → uint8 (N, H, W, 3): clip, ×255, truncate (public parse_output)."""
    out = (img.float().clamp(0, 1) * 255).to(torch.uint8)  # (N, 3, H, W)
    return out.permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, 3)


def motion_from_outputs(out: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """M's raw dict → motion (N, 70) float32 in the models.motion layout and canonical keypoints (N, 21, 3)."""
    o = {k: v.float() for k, v in out.items()}  # the public wrapper casts half outputs back to float32
    angles = [headpose_bins_to_degrees(o[k]) for k in ("pitch", "yaw", "roll")]  # 3 × (N,)
    motion = join_motion(o["exp"], *angles, o["t"], o["scale"])  # (N, 70)
    return motion, o["kp"].reshape(-1, NUM_KP, 3)  # (N, 70), (N, 21, 3)


class FaceModel(nn.Module):
    """The frozen LivePortrait-compatible renderer: F, M, W, G and the motion API."""

    def __init__(self, cfg: FaceModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or FaceModelConfig()
        self.cfg.validate()
        self.appearance_extractor = AppearanceFeatureExtractor(self.cfg.appearance)
        self.motion_extractor = MotionExtractor(self.cfg.motion)
        self.warping_module = WarpingNetwork(self.cfg.warping)
        self.spade_generator = SPADEDecoder(self.cfg.generator)
        self.amp_dtype: torch.dtype | None = None  # torch.float16 / bfloat16: autocast on CUDA (public: fp16)
        # Frozen renderer: .train() keeps eval mode (BatchNorm running stats, spectral norm without power
        # iteration) even when a parent module switches to training; set False for fine-tuning.
        self.frozen = True
        self.initialize_weights()
        self.eval()

    def train(self, mode: bool = True) -> FaceModel:
        return super().train(mode and not self.frozen)

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """Sensible random init: an untrained model gives finite, varied outputs (loading overwrites all)."""
        for module in self.modules():
            if hasattr(module, "weight_orig") and hasattr(module, "weight_u"):
                _converge_spectral_vectors(module)  # eval-mode σ = u·Wv ≈ largest singular value
        det = self.motion_extractor.detector
        det.fc_scale.bias.fill_(1.0)  # scale ≈ 1 so transformed keypoints stay inside the volume
        det.fc_exp.weight.mul_(0.1)  # small expression deltas
        det.fc_t.weight.mul_(0.1)  # small translation

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    @torch.no_grad()
    def extract_motion(self, frames: np.ndarray | Tensor, batch_size: int = 32) -> tuple[Tensor, Tensor]:
        """uint8 RGB (N, 256, 256, 3) → motion (N, 70) float32 and canonical keypoints (N, 21, 3), on CPU."""
        x = frames_to_input(frames)  # (N, 3, 256, 256)
        motions, kps = [], []
        for chunk in x.split(_check_batch_size(batch_size)):
            with self._autocast():
                out = self.motion_extractor(chunk.to(self.device))
            motion, kp = motion_from_outputs(out)  # (b, 70), (b, 21, 3)
            motions.append(motion.cpu())
            kps.append(kp.cpu())
        return torch.cat(motions), torch.cat(kps)  # (N, 70), (N, 21, 3)

    @torch.no_grad()
    def warp_decode(self, feature_3d: Tensor, kp_source: Tensor, kp_driving: Tensor) -> Tensor:
        """f_s (B, 32, 16, 64, 64), kp (B, 21, 3) → image (B, 3, 512, 512) in [0, 1] (public warp_decode)."""
        with self._autocast():
            warped = self.warping_module(feature_3d, kp_source=kp_source, kp_driving=kp_driving)
            return self.spade_generator(warped["out"]).float()  # (B, 3, 512, 512)

    @torch.no_grad()
    def render(
        self,
        source_frame: np.ndarray | Tensor,
        source_motion: np.ndarray | Tensor,
        source_kp: np.ndarray | Tensor,
        driving_motion: np.ndarray | Tensor,
        batch_size: int = 4,
    ) -> np.ndarray:
        """Source crop uint8 (256, 256, 3), its motion (70,) and x_c (21, 3), driving motion (N, 70)
        → uint8 frames (N, 512, 512, 3). x_s and x_d both come from x_c by models.motion.transform_keypoints.
        """
        src = frames_to_input(_as_tensor(source_frame, "source_frame")[None])  # (1, 3, 256, 256)
        src = src.to(self.device)
        m_s, kp_c, m_d = _check_render_motion(source_motion, source_kp, driving_motion)
        m_s, kp_c, m_d = (t.to(self.device) for t in (m_s, kp_c, m_d))
        with self._autocast():
            f_s = self.appearance_extractor(src)  # (1, 32, 16, 64, 64)
        x_s = transform_keypoints(kp_c, m_s)[None]  # (1, 21, 3)
        frames = []
        for chunk in m_d.split(_check_batch_size(batch_size)):
            b = chunk.shape[0]
            x_d = transform_keypoints(kp_c, chunk)  # (b, 21, 3)
            f_b = f_s.expand(b, *f_s.shape[1:])  # (b, 32, 16, 64, 64)
            x_s_b = x_s.expand(b, -1, -1)  # (b, 21, 3)
            img = self.warp_decode(f_b, x_s_b, x_d)  # (b, 3, 512, 512)
            frames.append(image_to_uint8(img))  # (b, 512, 512, 3)
        return np.concatenate(frames) if frames else np.zeros((0, OUTPUT_SIZE, OUTPUT_SIZE, 3), np.uint8)


def _converge_spectral_vectors(module: nn.Module, iters: int = 30) -> None:
    w = module.weight_orig.reshape(module.weight_orig.shape[0], -1)  # (out, in·kh·kw)
    u, v = module.weight_u, module.weight_v
    for _ in range(iters):
        v.copy_(torch.nn.functional.normalize(w.t() @ u, dim=0, eps=1e-12))
        u.copy_(torch.nn.functional.normalize(w @ v, dim=0, eps=1e-12))


def _check_batch_size(batch_size: int) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    return batch_size


def _check_render_motion(
    source_motion: np.ndarray | Tensor, source_kp: np.ndarray | Tensor, driving_motion: np.ndarray | Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    m_s = _as_tensor(source_motion, "source_motion").float()
    kp_c = _as_tensor(source_kp, "source_kp").float()
    m_d = _as_tensor(driving_motion, "driving_motion").float()
    if m_s.shape != (MOTION_DIM,):
        raise ValueError(f"source_motion must have shape ({MOTION_DIM},), got {tuple(m_s.shape)}")
    if kp_c.shape != (NUM_KP, 3):
        raise ValueError(f"source_kp must have shape ({NUM_KP}, 3), got {tuple(kp_c.shape)}")
    if m_d.ndim != 2 or m_d.shape[1] != MOTION_DIM:
        raise ValueError(f"driving_motion must have shape (N, {MOTION_DIM}), got {tuple(m_d.shape)}")
    for name, t in (("source_motion", m_s), ("source_kp", kp_c), ("driving_motion", m_d)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains non-finite values")
    return m_s, kp_c, m_d


def build_face_model(cfg: FaceModelConfig | str | None = None) -> FaceModel:
    """Randomly initialised FaceModel in eval mode; cfg: a FaceModelConfig or a preset ('tiny', 'full')."""
    if isinstance(cfg, str):
        if cfg not in PRESETS:
            raise ValueError(f"unknown face-model preset '{cfg}'; choose one of {sorted(PRESETS)}")
        cfg = PRESETS[cfg]()
    return FaceModel(cfg)
