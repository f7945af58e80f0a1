"""The one path from audio to motion: `playmate generate`, evaluation, validation, the demo and the
benchmarks all call `MotionGenerator`.

    audio (16 kHz mono, N·640 samples) ─► the model's frozen audio encoder (or precomputed features)
        ─► (B, N, L, C)
    reference (raw motion (70,), x_c (21, 3)) ─► f_id = [x_c | reference motion normalised with its
        own pose as the pose mean]
    generate_windowed (T-frame windows, each conditioned on the previous window's last Tp frames;
        nested CFG when an emotion is requested) ─► normalised (B, N, 70)
        ─► de-normalised with pose mean = the reference pose ─► raw motion (B, N, 70)

A clip's noise comes from its own seeded generator, so its motion is the same whether it is
generated alone (`playmate generate --seed S`) or in a batch of validation clips.

Shape legend: B clips · N frames (25 fps) · S = 640·N samples · L encoder layers · C channels.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from configs.schema import ExperimentConfig
from models.audio import build_audio_encoder, encode_windowed
from models.clock import SAMPLES_PER_FRAME
from models.diffusion import NoiseSchedule, SamplerSettings, generate_windowed
from models.dit import MotionDiT, reference_id_feat
from models.emotion import EMOTIONS, NULL_EMOTION
from models.motion import POSE, MotionStats, denormalize_motion
from pl_modules.inference.inputs import GenerationError, Reference, emotion_index, pcm_to_float


def clip_seed(base: int, key: str) -> int:
    """Per-clip seed: the same clip gets the same noise whatever the rank split or batch."""
    return (base + zlib.crc32(key.encode())) % (2**63 - 1)


class MotionGenerator:
    """A MotionDiT with its normalisation statistics, diffusion settings and audio encoder.

    Build it from a checkpoint (`from_checkpoint`) or from a live training module (`from_module`,
    which shares the module's weights, possibly EMA-swapped, and its encoder).
    """

    def __init__(self, model: MotionDiT, stats: MotionStats, config: ExperimentConfig,
                 encoder: nn.Module | None, source: str = "", global_step: int | None = None) -> None:
        self.model, self.stats, self.config, self.encoder, self.source = model, stats, config, encoder, source
        self.global_step = global_step  # of the checkpoint, when built from one
        self.schedule = NoiseSchedule.from_config(config.diffusion)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True
                        ) -> MotionGenerator:
        """Any checkpoint form (Lightning file, DeepSpeed dir, export dir); EMA weights when saved."""
        from configs.loader import ConfigError
        from models.weights import WeightsError
        from pl_modules.checkpoints import build_model, read_checkpoint

        try:
            ckpt = read_checkpoint(path)
            model = build_model(ckpt, use_ema)
        except (FileNotFoundError, ConfigError, WeightsError) as e:
            text = str(e)  # the loaders' messages already name the file
            raise GenerationError(text if str(path) in text else f"cannot load checkpoint {path}: {text}") from None
        cfg = ckpt.config
        encoder = None if cfg.data.audio_source == "precomputed" else _checked_encoder(cfg, str(path))
        gen = cls(model.eval(), ckpt.stats, cfg, encoder, str(path), ckpt.global_step)
        return gen.to(device)

    @classmethod
    def from_module(cls, module: Any) -> MotionGenerator:
        """From a training `MotionDiffusionModule`: its current weights and its frozen audio encoder."""
        encoder = module.audio_encoder if module.cfg.data.audio_source == "wav" else None
        return cls(module.model, module.stats, module.cfg, encoder, "training module")

    def to(self, device: str | torch.device) -> MotionGenerator:
        self.model.to(device)
        if self.encoder is not None:
            self.encoder.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_emotion_controller(self) -> bool:
        return self.model.emotion_controller is not None

    # ---------------------------------------------------------------------------------- generation

    def audio_features(self, wav: Tensor, num_frames: int) -> Tensor:
        """Float audio (B, S) → encoder features (B, N, L, C) on the model's device."""
        if self.encoder is None:
            raise GenerationError(f"{self.source}: the model was trained on precomputed audio features "
                                  "(data.audio_source=precomputed); give the clip's audio.npy features")
        a = self.config.audio  # the training window's context, in fixed overlapping windows
        return encode_windowed(self.encoder, wav.to(self.device), num_frames, a.context_frames, a.context_overlap)

    @torch.no_grad()
    def generate_batch(
        self,
        audio: np.ndarray | Tensor,
        references: Sequence[Reference],
        seeds: Sequence[int],
        emotions: Sequence[str | int | None] | None = None,
        steps: int | None = None,
        w_a: float | None = None,
        w_e: float | None = None,
        audio_feats: np.ndarray | Tensor | None = None,
    ) -> Tensor:
        """Raw motion (B, N, 70) float32 on CPU for B clips of N = S // 640 frames.

        audio: (B, S) int16 or float in [−1, 1] at 16 kHz; audio_feats: (B, N, L, C) precomputed
        features instead (for models trained on them). emotions: a name, label index or None per
        clip (stage-two models only; None = the null emotion). steps / w_a / w_e default to the
        checkpoint's diffusion section.
        """
        wav = pcm_to_float(audio)
        b, n = wav.shape[0], wav.shape[1] // SAMPLES_PER_FRAME
        if n < 1:
            raise GenerationError(f"audio is shorter than one 25 fps frame ({wav.shape[1]} samples at 16 kHz)")
        if len(references) != b or len(seeds) != b:
            raise ValueError(f"{b} clips of audio but {len(references)} references and {len(seeds)} seeds")
        labels = self._labels(emotions, b)
        device = self.device
        if audio_feats is not None:
            feats = torch.as_tensor(np.asarray(audio_feats) if not isinstance(audio_feats, Tensor) else audio_feats)
            feats = feats.float().to(device)[:, :n]
        else:
            feats = self.audio_features(wav[:, : n * SAMPLES_PER_FRAME], n)  # (B, N, L, C)
        ref_motion = torch.stack([r.motion.float() for r in references])  # (B, 70)
        kp = torch.stack([r.kp.float() for r in references])  # (B, 21, 3)
        id_feat = reference_id_feat(kp, ref_motion, self.stats).to(device)  # (B, 133)
        settings = SamplerSettings.from_config(self.config.diffusion, labels is not None, steps, w_a, w_e)
        m = self.model.config
        was_training = self.model.training
        self.model.eval()
        try:
            with self._autocast():
                x = generate_windowed(
                    self.model, self.schedule, feats, id_feat, m.t_window, m.tp, settings, num_frames=n,
                    emotion=None if labels is None else labels.to(device),
                    generator=[torch.Generator(device).manual_seed(int(s)) for s in seeds],
                )  # (B, N, 70) normalised
        finally:
            self.model.train(was_training)
        return denormalize_motion(x.float().cpu(), self.stats, ref_motion[:, None, POSE])  # (B, N, 70)

    def generate(self, audio: np.ndarray | Tensor, reference: Reference, seed: int = 0,
                 emotion: str | int | None = None, **kw: Any) -> Tensor:
        """One clip: audio (S,) → raw motion (N, 70) (see `generate_batch` for the options)."""
        feats = kw.pop("audio_feats", None)
        return self.generate_batch(
            pcm_to_float(audio)[None], [reference], [seed], None if emotion is None else [emotion],
            audio_feats=None if feats is None else torch.as_tensor(np.asarray(feats))[None], **kw,
        )[0]

    def _labels(self, emotions: Sequence[str | int | None] | None, b: int) -> Tensor | None:
        """(B,) long labels (None → null) for nested CFG, or None when no clip requests an emotion."""
        if emotions is None or all(e is None for e in emotions):
            return None
        if not self.has_emotion_controller:
            raise GenerationError(
                f"{self.source}: this checkpoint has no emotion controller (a stage-one model); "
                "drop --emotion or use a stage-two checkpoint"
            )
        if len(emotions) != b:
            raise ValueError(f"{len(emotions)} emotions for {b} clips")
        idx = [NULL_EMOTION if e is None else (e if isinstance(e, int) else emotion_index(e)) for e in emotions]
        if any(not 0 <= i <= NULL_EMOTION for i in idx):
            raise GenerationError(f"emotion labels {idx} outside [0, {NULL_EMOTION}] ({', '.join(EMOTIONS)}, null)")
        return torch.tensor(idx, dtype=torch.long)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 weights (DeepSpeed bf16 training) sample under autocast; fp32 weights as they are."""
        dtype = next(self.model.parameters()).dtype
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)


def _checked_encoder(cfg: ExperimentConfig, source: str) -> nn.Module:
    """The checkpoint's frozen audio encoder; its (L, C) must match what the DiT was trained on."""
    try:
        encoder = build_audio_encoder(cfg.audio)
    except (ValueError, OSError) as e:
        raise GenerationError(f"{source}: cannot build its audio encoder ({cfg.audio.name}): {e}") from None
    probe = encoder(torch.zeros(1, 4 * SAMPLES_PER_FRAME), 4)  # (1, 4, L, C)
    got, want = tuple(probe.shape[2:]), (cfg.model.audio_layers, cfg.model.audio_dim)
    if got != want:
        raise GenerationError(
            f"{source}: the DiT expects audio features of (layers, dim) = {want} but the configured audio "
            f"encoder {cfg.audio.name!r} gives {got}; the checkpoint's audio and model sections disagree "
            "(was it trained with another encoder?)"
        )
    return encoder


def generate_motion(
    checkpoint: str | Path | MotionGenerator,
    audio: str | Path | np.ndarray,
    reference: str | Path | Reference,
    emotion: str | None = None,
    pose_mode: str = "generated",
    driving: str | Path | Tensor | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    face_model: Any = None,
    **kw: Any,
) -> np.ndarray:
    """`playmate generate` in one call: raw motion (N, 70) float32, N = round(audio duration · 25).

    audio: a file path (any format PyAV decodes) or int16/float mono 16 kHz samples. reference: a
    .npz, a portrait image (with `face_model`), or a `Reference`. kw: steps / w_a / w_e.
    """
    from pl_modules.inference.inputs import load_audio, load_driving, load_reference, wav_from_array
    from pl_modules.inference.pose import apply_pose_mode, check_pose_mode

    emotion_index(emotion)  # validate the cheap inputs before loading anything heavy
    drv = load_driving(driving) if isinstance(driving, (str, Path)) else driving
    check_pose_mode(pose_mode, drv)
    ref = reference if isinstance(reference, Reference) else load_reference(reference, face_model)
    gen = checkpoint if isinstance(checkpoint, MotionGenerator) else MotionGenerator.from_checkpoint(checkpoint, device)
    wav = wav_from_array(audio) if isinstance(audio, np.ndarray) else load_audio(audio)
    motion = gen.generate(wav, ref, seed=seed, emotion=emotion, **kw)  # (N, 70)
    return apply_pose_mode(motion, ref.motion, pose_mode, drv).numpy().astype(np.float32)
