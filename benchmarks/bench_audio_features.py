"""wav2vec2 audio features for training: what each way of feeding them costs (issue 16).

    python benchmarks/bench_audio_features.py [--clips 24] [--seconds 8] [--rounds 2]

Options compared on synthetic shards (clips of 6–10 s), all with training windows of Tp + T = 125 frames:

- wav: 16 kHz int16 audio in the shards, the frozen encoder runs in the training step (on the GPU);
- w2v12 fp16: precomputed wav2vec2-base features of all 12 layers, float16 `audio.npy` (what
  `playmate shards precompute --encoder wav2vec2` writes), turned into float32 by the loader (today);
- w2v12 fp16 kept: the same shards, the loader keeping float16 up to the GPU (a variant of
  `WindowMaker.window` patched in here: the module's `.float()` then runs on the GPU);
- w2v4 fp16: only 4 of the 12 layers stored (a model trained on 4 layers; not implemented in training);
- w2v12 fp16, 4 windows per decoded clip (`data.windows_per_clip=4`, existing): decode amortised.

Per option: shard bytes per second of audio, loader windows/s with one worker (interleaved rounds,
median), bytes per window delivered to the GPU, and the encoder FLOPs per window the GPU must add.
The wav2vec2 weights are random (wav2vec2-base shapes, built from its config, never downloaded):
sizes, FLOPs and loader speed do not depend on the values.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_data import windows_per_s  # noqa: E402
from datamodules.features import precompute_audio_features  # noqa: E402
from datamodules.motion_wds import WindowMaker  # noqa: E402
from datamodules.shards import MANIFEST, DatasetWriter  # noqa: E402
from datamodules.synthetic import synthesize_dataset  # noqa: E402
from models.audio import AudioEncoderConfig, wav2vec2_flops  # noqa: E402
from models.dit import MotionDiT, MotionDiTConfig  # noqa: E402

FRAMES = 125  # Tp + T


def save_random_wav2vec2(d: Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(d)  # wav2vec2-base shapes


def keep_layers(src: Path, dst: Path, layers: list[int]) -> None:
    """Copy a featured dataset keeping only `layers` of audio.npy."""
    from datamodules.contract import ClipSample, decode_sample
    from datamodules.shards import iter_tar_samples

    manifest = _manifest(src)
    per_shard = max(int(s["count"]) for s in manifest["shards"])
    with DatasetWriter(dst, "synth", maxcount=per_shard, provenance={"layers": layers}) as w:
        for entry in manifest["shards"]:
            for raw in iter_tar_samples(src / entry["name"]):
                s = decode_sample(raw)
                w.write(ClipSample(s["__key__"], s["motion"], s["kp"], s["wav"], s["meta"],
                                   audio_feats=np.ascontiguousarray(s["audio_feats"][:, layers])))


class _KeepFloat16(np.ndarray):
    """float16 features whose `.astype(np.float32)` is a no-op: the patched loader keeps float16."""

    def astype(self, dtype, *a, **k):  # noqa: D102
        return np.asarray(self) if dtype == np.float32 else np.asarray(self).astype(dtype, *a, **k)


ORIGINAL_WINDOW = WindowMaker.window


def fp16_window(self, s, start):
    """WindowMaker.window with the features left in float16 (the loader variant this benchmark measures)."""
    if "audio_feats" in s:
        s = {**s, "audio_feats": s["audio_feats"].view(_KeepFloat16)}
    return ORIGINAL_WINDOW(self, s, start)


def loader_rate(ds: Path, source: str, seconds: float, per_clip: int = 1, keep_fp16: bool = False) -> float:
    """Windows/s of one loader worker (the patch is in place before the worker forks)."""
    patch = mock.patch.object(WindowMaker, "window", fp16_window) if keep_fp16 else contextlib.nullcontext()
    with patch:
        return windows_per_s(ds, 1, source, seconds, windows_per_clip=per_clip)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=8.0, help="loader timing per measurement")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        synthesize_dataset(t / "wav", clips=args.clips, seed=0, video=False, maxcount=4)
        save_random_wav2vec2(t / "w2v_model")
        cfg = AudioEncoderConfig(name="wav2vec2", wav2vec2_path=str(t / "w2v_model"))
        t0 = time.perf_counter()
        precompute_audio_features(t / "wav", t / "w2v12", cfg, batch_size=4)
        encode_s = time.perf_counter() - t0
        keep_layers(t / "w2v12", t / "w2v4", [2, 5, 8, 11])
        audio_s = json.loads((t / "wav" / "stats.json").read_text())["num_frames"] / 25
        options = [("wav (encoder in the step)", t / "wav", "wav", 1, False),
                   ("w2v12 fp16 → fp32 in the loader (today)", t / "w2v12", "precomputed", 1, False),
                   ("w2v12 fp16 kept to the GPU", t / "w2v12", "precomputed", 1, True),
                   ("w2v4 fp16 → fp32 in the loader", t / "w2v4", "precomputed", 1, False),
                   ("w2v12 fp16 → fp32, 4 windows per clip", t / "w2v12", "precomputed", 4, False)]
        rates: dict[str, list[float]] = {o[0]: [] for o in options}
        for r in range(args.rounds):
            for name, ds, source, k, fp16 in (options if r % 2 == 0 else list(reversed(options))):
                rates[name].append(loader_rate(ds, source, args.seconds, k, fp16))
        sizes = {o[0]: sum(f.stat().st_size for f in o[1].glob("*.tar")) for o in options}
    w2v = wav2vec2_flops({}, FRAMES * 640)
    dit = {lc: MotionDiT(MotionDiTConfig(preset="B", audio_layers=lc[0], audio_dim=lc[1])).flops_per_sample()
           for lc in ((12, 768), (4, 768))}
    print(f"\n{args.clips} synthetic clips, {audio_s:.0f} s of audio; windows of {FRAMES} frames, batch 32, 1 loader "
          f"worker, {args.rounds} interleaved rounds (medians); 1 torch thread; load average {load0:.1f} → "
          f"{os.getloadavg()[0]:.1f}; wav2vec2-base on this CPU: {encode_s / audio_s * 5:.2f} s per 5 s window")
    print("| option | shard KB per s of audio | loader windows/s per worker | bytes per window to the GPU | "
          "GPU forward GFLOP per window (DiT B ×3 + encoder) | all rounds |")
    print("|---|---:|---:|---:|---:|---|")
    per_window = {"wav": FRAMES * 640 * 4, "12": FRAMES * 12 * 768 * 4, "12h": FRAMES * 12 * 768 * 2,
                  "4": FRAMES * 4 * 768 * 4}
    for name, ds, source, k, fp16 in options:
        key = "wav" if source == "wav" else ("4" if "w2v4" in name else ("12h" if fp16 else "12"))
        gflop = (3 * dit[(4, 768) if key == "4" else (12, 768)] + (w2v if source == "wav" else 0)) / 1e9
        print(f"| {name} | {sizes[name] / 1e3 / audio_s:.0f} | {statistics.median(rates[name]):.0f} | "
              f"{per_window[key] / 1e6:.2f} MB | {gflop:.1f} | {' '.join(f'{x:.0f}' for x in rates[name])} |")
    print(f"\nwav2vec2-base forward per window: {w2v / 1e9:.1f} GFLOP (formula; 24.5 of it in the conv front end); "
          f"DiT B training per window: 3 × {dit[(12, 768)] / 1e9:.2f} = {3 * dit[(12, 768)] / 1e9:.1f} GFLOP; "
          f"encoder / DiT training = {w2v / (3 * dit[(12, 768)]):.2f}")


def _manifest(d: Path) -> dict:
    return json.loads((d / MANIFEST).read_text())


if __name__ == "__main__":
    main()
