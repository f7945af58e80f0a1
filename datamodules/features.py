"""Precomputed audio features: rewrite a dataset with a float16 `audio.npy` (T, L, C) per clip.

Training with ``data.audio_source=precomputed`` then skips the frozen encoder. The copy keeps keys,
members, shard prefix and clips per shard of the source, and its manifest records the encoder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.contract import ClipSample, ContractError
from datamodules.shards import MANIFEST, DatasetWriter, check_dataset, read_clip_samples
from models.audio import AudioEncoderConfig, audio_feature_shape, build_audio_encoder, encode_windowed


def _iter_clips(src: Path, manifest: dict[str, Any]) -> Iterator[ClipSample]:
    """Every sample of the source dataset, decoded, validated and turned back into a ClipSample."""
    for entry in manifest["shards"]:
        yield from read_clip_samples(src / entry["name"])


def _encode(encoder: torch.nn.Module, clips: list[ClipSample], cfg: AudioEncoderConfig,
            device: torch.device) -> list[np.ndarray]:
    """Features (T, L, C) float16 of each clip, encoded in the fixed windows training and generation use."""
    out = []
    for c in clips:
        wav = torch.from_numpy(c.wav.astype(np.float32) / 32768.0)[None].to(device)  # (1, S)
        feats = encode_windowed(encoder, wav, c.motion.shape[0], cfg.context_frames, cfg.context_overlap)
        out.append(feats[0].cpu().numpy().astype(np.float16))  # (T, L, C)
    return out


def _layout(manifest: dict[str, Any]) -> tuple[str, int]:
    """Shard prefix and clips per shard of a writer-made dataset ('{prefix}-NNNNNN.tar')."""
    first = Path(manifest["shards"][0]["name"]).name
    prefix = first.rsplit("-", 1)[0] if "-" in first else first.removesuffix(".tar")
    return prefix, max(int(s["count"]) for s in manifest["shards"])


def precompute_audio_features(
    src_dir: str | Path,
    dst_dir: str | Path,
    encoder_cfg: AudioEncoderConfig,
    batch_size: int = 8,
    device: str = "cpu",
) -> dict[str, Any]:
    """Copy dataset `src_dir` to `dst_dir` adding float16 audio.npy (T, L, C) to every clip; returns the manifest."""
    src, dst = Path(src_dir), Path(dst_dir)
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    if not (src / MANIFEST).is_file():
        raise FileNotFoundError(f"{src}: no {MANIFEST}; precompute reads a dataset directory "
                                "written by the shard writer")
    if dst.resolve() == src.resolve():
        raise ValueError(f"destination {dst} is the source: write the featured copy to another directory")
    if (dst / MANIFEST).exists():
        raise FileExistsError(f"{dst} already holds a dataset ({MANIFEST}); choose an empty directory")
    manifest = json.loads((src / MANIFEST).read_text())
    if not manifest.get("shards"):
        raise ValueError(f"{src}/{MANIFEST} lists no shards")
    encoder = build_audio_encoder(encoder_cfg).to(device)
    cfg_dict = asdict(encoder_cfg) if is_dataclass(encoder_cfg) else dict(encoder_cfg)
    provenance = {
        **manifest.get("provenance", {}),
        "audio_features": {"encoder": cfg_dict, "feature_shape": list(audio_feature_shape(encoder_cfg)),
                           "dtype": "float16", "source_dir": str(src)},
    }
    prefix, per_shard = _layout(manifest)
    with DatasetWriter(dst, prefix, maxcount=per_shard, provenance=provenance) as writer:
        batch: list[ClipSample] = []
        for clip in _iter_clips(src, manifest):
            batch.append(clip)
            if len(batch) == batch_size:
                _flush(writer, encoder, encoder_cfg, batch, torch.device(device))
        _flush(writer, encoder, encoder_cfg, batch, torch.device(device))
    problems, _ = check_dataset(dst, check_video=False)
    if problems:
        raise ContractError(f"{dst}: the featured copy fails the contract: " + "; ".join(map(str, problems[:5])))
    return json.loads((dst / MANIFEST).read_text())


def _flush(writer: DatasetWriter, encoder: torch.nn.Module, encoder_cfg: AudioEncoderConfig, batch: list[ClipSample],
           device: torch.device) -> None:
    """Encode and write the pending clips, then empty the list."""
    if not batch:
        return
    for clip, feats in zip(batch, _encode(encoder, batch, encoder_cfg, device)):
        clip.audio_feats = feats
        writer.write(clip)
    batch.clear()


# Encoder settings that change the features: a precomputed dataset must match the training config in these.
_FEATURE_KEYS = {"mel": ("name", "n_mels", "n_fft", "f_min", "f_max", "context_frames", "context_overlap"),
                 "wav2vec2": ("name", "context_frames", "context_overlap")}


def precomputed_mismatches(dirs: list[str], cfg: AudioEncoderConfig) -> list[str]:
    """For `data.audio_source=precomputed`: each dataset whose recorded encoder (manifest provenance)
    differs from the `audio` config in a setting that changes the features, as 'DIR: key a ≠ b'.
    Datasets without the record (not made by `shards precompute`) are not judged."""
    problems = []
    for d in dirs:
        path = Path(d) / MANIFEST
        try:
            recorded = json.loads(path.read_text())["provenance"]["audio_features"]["encoder"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for key in _FEATURE_KEYS.get(cfg.name, ("name",)):
            want, got = getattr(cfg, key), recorded.get(key, "(not recorded: made before windowed encoding)")
            if got != want:
                problems.append(f"{d}: audio.{key} is {want!r} but its features were made with {got!r}; "
                                f"recompute with `playmate shards precompute` or set audio.{key}={got}")
    return problems
