"""Training-window throughput of one data worker against plain tar + np.load + wave on the same members.

    python benchmarks/bench_data.py [--clips 48] [--seconds 4] [--rounds 5] [--no-video]

Every row is a stream of batches of 32 windows (T = 100 + Tp = 25 frames) read through a DataLoader
with one worker process, so each pays the same start-up and batch transfer:

- plain limit: shards in random order through Python's `tarfile`, `np.load`, `wave` and `json` on
  the members a window needs, one window per clip cut by slicing; no hash, no checks, no shuffle;
- pipeline before: the stages as they were before the lean reader (webdataset's tarfile reader, every
  member read, `np.load`/`wave` decode, windows normalised through torch one by one, then stacked),
  kept here as a reference;
- pipeline: `datamodules.motion_wds.TrainWindowStream` as training runs it.

Both pipelines check the sha256 of every member they decode against the sample's recorded hashes and
validate the contract (ranges, NaN), with a shuffle buffer of 64 samples. The rows run interleaved
(one of each per round, the order rotating) and the table shows medians over the rounds, so load
from other processes hits all rows alike. Figures go to benchmarks/RESULTS.md with the machine.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import random
import statistics
import tarfile
import tempfile
import time
import wave
from functools import partial
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

T_WINDOW, TP, BATCH = 100, 25, 32


# ------------------------------------------------------------------------------------------------
# The plain limit
# ------------------------------------------------------------------------------------------------


class PlainTarWindows(IterableDataset):
    """Batches of one raw window per clip, read with tarfile + np.load + wave + json and nothing else."""

    def __init__(self, urls: list[str], audio_source: str) -> None:
        self.urls, self.audio_source = urls, audio_source
        self.members = {"motion.npy", "kp.npy", "wav", "json"} | ({"audio.npy"} if audio_source == "precomputed"
                                                                   else set())

    def clips(self, rng: random.Random):
        while True:
            with tarfile.open(rng.choice(self.urls)) as tar:
                sample: dict = {}
                for info in tar:
                    key, _, ext = info.name.partition(".")
                    if sample and sample["key"] != key:
                        yield sample
                        sample = {}
                    if ext in self.members:
                        sample["key"] = key
                        sample[ext] = tar.extractfile(info).read()
                if sample:
                    yield sample

    def window(self, raw: dict, rng: random.Random) -> dict:
        motion = np.load(io.BytesIO(raw["motion.npy"]), allow_pickle=False)
        kp = np.load(io.BytesIO(raw["kp.npy"]), allow_pickle=False)
        meta = json.loads(raw["json"])
        start = rng.randint(TP, motion.shape[0] - T_WINDOW)
        w = {"motion": motion[start - TP : start + T_WINDOW], "kp": kp,
             "pose_mean": np.asarray(meta["pose_mean"], np.float32)}
        if self.audio_source == "precomputed":
            feats = np.load(io.BytesIO(raw["audio.npy"]), allow_pickle=False)
            w["audio"] = feats[start - TP : start + T_WINDOW].astype(np.float32)
        else:
            with wave.open(io.BytesIO(raw["wav"])) as f:
                wav = np.frombuffer(f.readframes(f.getnframes()), "<i2")
            w["audio"] = wav[(start - TP) * 640 : (start + T_WINDOW) * 640].astype(np.float32) / 32768.0
        return w

    def __iter__(self):
        rng = random.Random(0)
        items = []
        for raw in self.clips(rng):
            items.append(self.window(raw, rng))
            if len(items) == BATCH:
                yield {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
                items = []


# ------------------------------------------------------------------------------------------------
# The pipeline before the lean reader (reference only)
# ------------------------------------------------------------------------------------------------


def reference_decode(raw: dict) -> dict:
    """decode_sample as it was: every decoded member hashed, np.load and wave for the arrays."""
    import hashlib

    from datamodules.contract import DECODED_MEMBERS, REQUIRED_MEMBERS, ContractError

    where = f"{raw.get('__url__')}:{raw.get('__key__')}"
    if any(m not in raw for m in REQUIRED_MEMBERS):
        raise ContractError(f"{where}: missing member")
    digests = json.loads(raw["sha256"])
    if any(hashlib.sha256(raw[m]).hexdigest() != digests[m] for m in DECODED_MEMBERS if m in digests):
        raise ContractError(f"{where}: corrupted")
    out = {"__key__": raw["__key__"], "__url__": raw["__url__"],
           "motion": np.load(io.BytesIO(raw["motion.npy"]), allow_pickle=False),
           "kp": np.load(io.BytesIO(raw["kp.npy"]), allow_pickle=False), "meta": json.loads(raw["json"])}
    with wave.open(io.BytesIO(raw["wav"])) as f:
        out["sample_rate"], out["channels"] = f.getframerate(), f.getnchannels()
        out["wav"] = np.frombuffer(f.readframes(f.getnframes()), "<i2").astype(np.int16)
    if "audio.npy" in raw:
        out["audio_feats"] = np.load(io.BytesIO(raw["audio.npy"]), allow_pickle=False)
    return out


def reference_window(maker, s: dict, start: int) -> dict:
    """WindowMaker.window as it was: normalisation through torch tensors, np.pad for the context."""
    from datamodules.contract import SAMPLES_PER_FRAME
    from models.emotion import EMOTIONS, NULL_EMOTION
    from models.motion import POSE, normalize_motion

    t, tp = maker.t_window, maker.tp
    lo = start - tp
    pad, idx = max(0, -lo), slice(max(lo, 0), start + t)
    pose_mean = np.asarray(s["meta"]["pose_mean"], dtype=np.float32)
    motion = normalize_motion(torch.from_numpy(s["motion"][idx]), maker.stats, torch.from_numpy(pose_mean)).numpy()
    first = torch.from_numpy(s["motion"][0])
    out = {"motion": np.pad(motion, ((pad, 0), (0, 0))).astype(np.float32), "has_context": start >= tp,
           "kp": s["kp"], "ref_motion": normalize_motion(first, maker.stats, first[POSE]).numpy(),
           "pose_mean": pose_mean, "key": s["__key__"], "start": start,
           "emotion": EMOTIONS.index(s["meta"]["emotion"]) if s["meta"]["emotion"] else NULL_EMOTION}
    if maker.audio_source == "precomputed":
        out["audio"] = np.pad(s["audio_feats"][idx].astype(np.float32), ((pad, 0), (0, 0), (0, 0)))
    else:
        a = s["wav"][max(lo, 0) * SAMPLES_PER_FRAME : (start + t) * SAMPLES_PER_FRAME].astype(np.float32) / 32768.0
        out["audio"] = np.pad(a, (pad * SAMPLES_PER_FRAME, 0))
    return out


def reference_windows(clips, maker, per_clip: int, rng: random.Random, ledger):
    """random_windows as it was: each window cut on its own, then stacked by collate_windows."""
    for s in clips:
        snapshot = ledger.snapshot()
        for start in maker.random_starts(s["motion"].shape[0], per_clip, rng):
            yield {**maker.window(s, start), "data_stats": snapshot}


def reference_stream(stream):
    """A copy of a TrainWindowStream running the stages before the lean reader: webdataset's tarfile
    reader, `reference_decode`, `reference_window` and `collate_windows` (nothing global is patched)."""
    import datamodules.motion_wds as mw
    from datamodules.windows import collate_windows

    ref = copy.copy(stream)
    ref.maker = copy.copy(stream.maker)
    ref.maker.window = partial(reference_window, ref.maker)
    current = stream.pipeline

    def pipeline(worker: int, num_workers: int) -> list:
        stages = current(worker, num_workers)
        for i, stage in enumerate(stages):
            if getattr(stage, "func", None) is mw.tar_samples:
                stages[i] = wds.tarfile_to_samples(handler=stage.keywords["handler"])
            elif getattr(stage, "func", None) is mw.decoded_clips:
                stages[i] = partial(mw.decoded_clips, **{**stage.keywords, "decode": reference_decode})
            elif getattr(stage, "func", None) is mw.random_windows:
                stages[i] = partial(reference_windows, **{**stage.keywords, "maker": ref.maker})
        # the last two stages: batching (now of cuts, then of finished windows) and the epoch's slice
        stages[-2] = wds.batched(stream.batch_size, collation_fn=collate_windows, partial=False)
        return stages

    ref.pipeline = pipeline
    return ref


# ------------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------------


def datamodule(ds: Path, workers: int, audio_source: str, windows_per_clip: int):
    from configs.schema import DataConfig
    from datamodules.motion_wds import MotionDataModule

    cfg = DataConfig(train_shards=[str(ds)], batch_size=BATCH, num_workers=workers, shuffle_buffer=64,
                     epoch_windows=10**9, audio_source=audio_source, windows_per_clip=windows_per_clip)
    dm = MotionDataModule(cfg, t_window=T_WINDOW, tp=TP)
    dm.setup()
    return dm


def rate(loader: DataLoader, seconds: float) -> float:
    """Windows/s of a loader after its first batch (worker started, first shards open)."""
    it = iter(loader)
    next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += next(it)["motion"].shape[0]
    return n / (time.perf_counter() - t0)


def windows_per_s(ds: Path, workers: int, audio_source: str, seconds: float, windows_per_clip: int = 1) -> float:
    """Windows/s of the training pipeline with `workers` DataLoader workers (used by other benchmarks)."""
    return rate(datamodule(ds, workers, audio_source, windows_per_clip).train_dataloader(), seconds)


def loader(kind: str, ds: Path, audio_source: str, windows_per_clip: int = 1) -> DataLoader:
    if kind == "plain":
        urls = sorted(str(p) for p in ds.glob("*.tar"))
        return DataLoader(PlainTarWindows(urls, audio_source), batch_size=None, num_workers=1)
    dm = datamodule(ds, 1, audio_source, windows_per_clip)
    if kind == "new":
        return dm.train_dataloader()
    return DataLoader(reference_stream(dm.train_dataset()), batch_size=None, num_workers=1)


def decode_clips_per_s(ds: Path, seconds: float, backend: str) -> float:
    from datamodules.shards import iter_tar_samples
    from datamodules.video import decode_frames

    videos = [s["mp4"] for tar in sorted(ds.glob("*.tar")) for s in iter_tar_samples(tar) if "mp4" in s]
    rng = random.Random(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        start = rng.randint(0, 150 - 16)  # synthetic clips are ≥ 6 s
        frames = decode_frames(rng.choice(videos), list(range(start, start + 16)), backend=backend)
        if frames.shape[0] != 16:
            raise RuntimeError(f"{backend} decoded {frames.shape[0]} frames, expected 16")
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per row and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-video", action="store_true", help="skip the video-decode rows")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from datamodules.features import precompute_audio_features
    from datamodules.synthetic import synthesize_dataset
    from models.audio import AudioEncoderConfig

    with tempfile.TemporaryDirectory() as tmp:
        wav_ds, mel_ds = Path(tmp) / "synth", Path(tmp) / "synth_mel"
        synthesize_dataset(wav_ds, clips=args.clips, seed=0, maxcount=4)
        precompute_audio_features(wav_ds, mel_ds, AudioEncoderConfig(name="mel"))
        rows = {  # name → (kind, dataset, audio source, windows per clip)
            "wav: plain tarfile + np.load + wave (limit)": ("plain", wav_ds, "wav", 1),
            "wav: pipeline before": ("old", wav_ds, "wav", 1),
            "wav: pipeline": ("new", wav_ds, "wav", 1),
            "wav: pipeline, data.windows_per_clip=4": ("new", wav_ds, "wav", 4),
            "mel: plain tarfile + np.load (limit)": ("plain", mel_ds, "precomputed", 1),
            "mel: pipeline before": ("old", mel_ds, "precomputed", 1),
            "mel: pipeline": ("new", mel_ds, "precomputed", 1),
        }
        names = list(rows)
        rates: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                kind, ds, source, per_clip = rows[name]
                rates[name].append(rate(loader(kind, ds, source, per_clip), args.seconds))
        video = {} if args.no_video else {b: decode_clips_per_s(wav_ds, args.seconds, b) for b in ("decord", "pyav")}
    median = {n: statistics.median(v) for n, v in rates.items()}
    print(f"one DataLoader worker, batch {BATCH}, T = {T_WINDOW} + Tp = {TP}; medians of {args.rounds} interleaved "
          f"rounds of {args.seconds:g} s")
    print(f"{'stream':44s} {'windows/s':>10s} {'min–max':>13s} {'÷ limit':>8s}")
    for name in names:
        limit = median[next(n for n in names if n.startswith(name[:4]) and "limit" in n)]
        lo, hi = min(rates[name]), max(rates[name])
        print(f"{name:44s} {median[name]:10.0f} {f'{lo:.0f}–{hi:.0f}':>13s} {median[name] / limit:8.2f}")
    for backend, cps in video.items():
        print(f"{f'16-frame 256² video window decode ({backend})':44s} {cps:10.1f} clips/s, 1 process")


if __name__ == "__main__":
    main()
