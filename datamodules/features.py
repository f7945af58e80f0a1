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
from models.audio import AudioEncoderConfig, audio_feature_shape, build_audio_encoder


def _iter_clips(src: Path, manifest: dict[str, Any]) -> Iterator[ClipSample]:
    """Every sample of the source dataset, decoded, validated and turned back into a ClipSample."""
    for entry in manifest["shards"]:
        yield from read_clip_samples(src / entry["name"])


def _encode(encoder: torch.nn.Module, clips: list[ClipSample], device: torch.device) -> list[np.ndarray]:
    """Features (T, L, C) float16 of each clip; one forward for the batch where padding is harmless."""
    wavs = [torch.from_numpy(c.wav.astype(np.float32) / 32768.0) for c in clips]  # (S_i,)
    frames = [c.motion.shape[0] for c in clips]
    with torch.no_grad():
        if getattr(encoder, "pads_with_silence", False):
            batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True).to(device)  # (B, S_max)
            feats = encoder(batch, max(frames))  # (B, T_max, L, C)
            out = [feats[i, :t] for i, t in enumerate(frames)]
        else:
            out = [encoder(w[None].to(device), t)[0] for w, t in zip(wavs, frames)]  # (T, L, C) each
    return [f.float().cpu().numpy().astype(np.float16) for f in out]


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
                _flush(writer, encoder, batch, torch.device(device))
        _flush(writer, encoder, batch, torch.device(device))
    problems, _ = check_dataset(dst, check_video=False)
    if problems:
        raise ContractError(f"{dst}: the featured copy fails the contract: " + "; ".join(map(str, problems[:5])))
    return json.loads((dst / MANIFEST).read_text())


def _flush(writer: DatasetWriter, encoder: torch.nn.Module, batch: list[ClipSample], device: torch.device) -> None:
    """Encode and write the pending clips, then empty the list."""
    if not batch:
        return
    for clip, feats in zip(batch, _encode(encoder, batch, device)):
        clip.audio_feats = feats
        writer.write(clip)
    batch.clear()
