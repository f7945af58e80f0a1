"""Writing and checking dataset directories of contract shards.

A dataset directory holds ``{prefix}-{NNNNNN}.tar`` shards, ``manifest.json`` (shards, counts,
sha256, schema version, provenance) and ``stats.json`` (normalisation statistics plus the
sufficient statistics they came from, so that slices written in parallel merge exactly).
"""

from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from datamodules.contract import (
    DECODED_MEMBERS,
    SCHEMA_VERSION,
    ClipSample,
    ContractError,
    decode_sample,
    encode_sample,
    sample_problems,
    validate_sample,
)
from models.motion import EXP, EXP_DIM, POSE_DIM, MotionStats
from models.weights import sha256_file

MANIFEST = "manifest.json"
STATS = "stats.json"


class StatsAccumulator:
    """Sufficient statistics for `stats.json`: expression sums over frames, pose std over clips."""

    def __init__(self) -> None:
        self.frames = 0
        self.clips = 0
        self.exp_sum = np.zeros(EXP_DIM)
        self.exp_sumsq = np.zeros(EXP_DIM)
        self.pose_std_sum = np.zeros(POSE_DIM)
        self.max_clip_frames = 0  # the longest clip: a training window must fit in it

    def add(self, motion: np.ndarray) -> None:
        m = motion.astype(np.float64)
        self.frames += m.shape[0]
        self.clips += 1
        self.max_clip_frames = max(self.max_clip_frames, m.shape[0])
        self.exp_sum += m[:, EXP].sum(0)
        self.exp_sumsq += (m[:, EXP] ** 2).sum(0)
        self.pose_std_sum += m[:, EXP_DIM:].std(0)

    def merge(self, other: StatsAccumulator) -> None:
        self.frames += other.frames
        self.clips += other.clips
        self.exp_sum += other.exp_sum
        self.exp_sumsq += other.exp_sumsq
        self.pose_std_sum += other.pose_std_sum
        self.max_clip_frames = max(self.max_clip_frames, other.max_clip_frames)

    def to_json(self) -> dict[str, Any]:
        if self.clips == 0:
            raise ValueError("no clips were written: cannot compute normalisation statistics")
        mean = self.exp_sum / self.frames
        var = np.maximum(self.exp_sumsq / self.frames - mean**2, 0.0)
        std = np.sqrt(var)
        stats = MotionStats.from_dict(
            {"exp_mean": mean, "exp_std": np.maximum(std, 1e-4),
             "pose_std": np.maximum(self.pose_std_sum / self.clips, 1e-4)}
        )
        return {
            **stats.to_dict(),
            "num_clips": self.clips,
            "num_frames": self.frames,
            "max_clip_frames": self.max_clip_frames,
            "accumulators": {
                "frames": self.frames,
                "clips": self.clips,
                "exp_sum": self.exp_sum.tolist(),
                "exp_sumsq": self.exp_sumsq.tolist(),
                "pose_std_sum": self.pose_std_sum.tolist(),
            },
            "schema_version": SCHEMA_VERSION,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StatsAccumulator:
        a = d["accumulators"]
        acc = cls()
        acc.frames, acc.clips = int(a["frames"]), int(a["clips"])
        acc.exp_sum = np.asarray(a["exp_sum"], dtype=np.float64)
        acc.exp_sumsq = np.asarray(a["exp_sumsq"], dtype=np.float64)
        acc.pose_std_sum = np.asarray(a["pose_std_sum"], dtype=np.float64)
        acc.max_clip_frames = int(d.get("max_clip_frames", 0))  # 0: unknown (written before it was recorded)
        return acc


def stats_file_problems(path: Path) -> list[str]:
    """What makes a stats.json unusable: unreadable, missing fields, or implausible values in its
    statistics or in the accumulators that merging datasets relies on."""
    try:
        d = json.loads(path.read_text())
        MotionStats.from_dict(d)
        if "accumulators" in d:  # what a merge of datasets recomputes the statistics from
            MotionStats.from_dict(StatsAccumulator.from_json(d).to_json())
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        return [f"invalid normalisation statistics ({type(e).__name__}: {e})"]
    return []


def load_stats(path: str | Path) -> MotionStats:
    """`stats.json` → MotionStats, with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: normalisation statistics not found (a dataset directory has stats.json)")
    try:
        return MotionStats.from_dict(json.loads(path.read_text()))
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: invalid normalisation statistics: {e}") from e


class DatasetWriter:
    """Validates clips and writes them to shards with manifest.json and stats.json on close.

    Every clip is checked with the contract validator before it is written; a bad clip raises
    ContractError and nothing is written for it (what was already written stays valid).
    """

    def __init__(
        self,
        out_dir: str | Path,
        prefix: str,
        maxcount: int = 1000,
        maxsize: float = 1e9,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.provenance = provenance or {}
        self.stats = StatsAccumulator()
        self.shards: list[dict[str, Any]] = []
        self._keys: set[str] = set()
        self._writer = wds.ShardWriter(
            str(self.out_dir / f"{prefix}-%06d.tar"), maxcount=maxcount, maxsize=maxsize,
            post=self._shard_done, verbose=0, mtime=0.0,
        )

    def _shard_done(self, fname: str) -> None:
        count = self._writer.count
        if count == 0:  # ShardWriter opens a stream eagerly; drop an empty trailing shard
            Path(fname).unlink(missing_ok=True)
            return
        self.shards.append({"name": Path(fname).name, "count": count, "sha256": sha256_file(fname)})

    def write(self, clip: ClipSample) -> None:
        if clip.key in self._keys:
            raise ContractError(f"duplicate key {clip.key!r}: every clip in a dataset needs a unique key")
        encoded = encode_sample(clip)
        validate_sample(decode_sample(encoded))
        self._writer.write(encoded)
        self._keys.add(clip.key)
        self.stats.add(clip.motion)

    def close(self) -> dict[str, Any]:
        """Finish the last shard and write manifest.json and stats.json; returns the manifest."""
        self._writer.close()
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "shards": self.shards,
            "num_samples": sum(s["count"] for s in self.shards),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "provenance": self.provenance,
        }
        write_json(self.out_dir / MANIFEST, manifest)
        write_json(self.out_dir / STATS, self.stats.to_json())
        return manifest

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, *args) -> None:
        self.close() if exc_type is None else self._writer.close()


def write_json(path: Path, obj: Any) -> None:
    """Write atomically (tmp file + rename) so a crash never leaves a half-written json."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    tmp.replace(path)


def merge_datasets(parts: Iterable[str | Path], out_dir: str | Path, provenance: dict[str, Any] | None = None) -> dict:
    """Merge manifest/stats of slices whose shards already lie in `out_dir` (or are listed relative to it)."""
    out_dir = Path(out_dir)
    shards, acc = [], StatsAccumulator()
    for part in parts:
        part = Path(part)
        m = json.loads((part / MANIFEST).read_text())
        for s in m["shards"]:
            rel = (part / s["name"]).resolve().relative_to(out_dir.resolve())
            shards.append({**s, "name": str(rel)})
        acc.merge(StatsAccumulator.from_json(json.loads((part / STATS).read_text())))
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "shards": shards,
        "num_samples": sum(s["count"] for s in shards),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "provenance": provenance or {},
    }
    write_json(out_dir / MANIFEST, manifest)
    write_json(out_dir / STATS, acc.to_json())
    return manifest


# ------------------------------------------------------------------------------------------------
# Checking a dataset directory
# ------------------------------------------------------------------------------------------------


@dataclass
class Problem:
    """One thing wrong with a dataset directory."""

    shard: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.shard}:{self.key}: {self.message}"


def iter_tar_samples(path: Path) -> Iterable[dict[str, Any]]:
    """Group the members of a tar into samples by key (webdataset's rule: key = name up to first dot)."""
    current: dict[str, Any] | None = None
    with tarfile.open(path, "r") as tar:
        for info in tar:
            if not info.isfile():
                continue
            base = info.name.split("/")[-1]
            key, _, ext = base.partition(".")
            f = tar.extractfile(info)
            data = f.read() if f else b""
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key, "__url__": str(path)}
            current[ext] = data
    if current is not None:
        yield current


def read_clip_samples(path: Path) -> Iterable[ClipSample]:
    """Every sample of one shard, decoded, validated (all member hashes) and turned back into a `ClipSample`
    carrying every member: the decoded ones, the mp4 and any other member as raw bytes (`extra`)."""
    decoded = set(DECODED_MEMBERS) | {"mp4", "sha256"}
    for raw in iter_tar_samples(path):
        s = validate_sample(decode_sample(raw, verify_all=True))
        extra = {k: v for k, v in raw.items() if not k.startswith("__") and k not in decoded}
        yield ClipSample(s["__key__"], s["motion"], s["kp"], s["wav"], s["meta"], mp4=s.get("mp4"),
                         audio_feats=s.get("audio_feats"), extra=extra)


def check_dataset(directory: str | Path, check_video: bool = True) -> tuple[list[Problem], dict[str, int]]:
    """Verify hashes, counts and every sample of a dataset directory. Returns (problems, summary)."""
    d = Path(directory)
    problems: list[Problem] = []
    summary = {"shards": 0, "samples": 0, "bad_samples": 0}
    if not (d / MANIFEST).is_file():
        return [Problem(MANIFEST, "-", "missing: not a dataset directory written by the shard writer")], summary
    try:
        manifest = json.loads((d / MANIFEST).read_text())
        entries = manifest["shards"]
        listed = {s["name"] for s in entries}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        return [Problem(MANIFEST, "-", f"not a valid manifest ({type(e).__name__}: {e}); re-create it with "
                                       "`playmate prepare --merge` or the shard writer")], summary
    if not entries:
        problems.append(Problem(MANIFEST, "-", "lists no shards: the dataset is empty"))
    if manifest.get("schema_version") != SCHEMA_VERSION:
        problems.append(Problem(MANIFEST, "-", f"schema_version {manifest.get('schema_version')} != {SCHEMA_VERSION}"))
    if not (d / STATS).is_file():
        problems.append(Problem(STATS, "-", "missing: training needs normalisation statistics"))
    else:
        problems.extend(Problem(STATS, "-", e) for e in stats_file_problems(d / STATS))
    for extra in sorted(p.name for p in d.glob("*.tar") if p.name not in listed):
        problems.append(Problem(extra, "-", "shard not listed in manifest.json"))
    keys: dict[str, str] = {}
    for entry in entries:
        summary["shards"] += 1
        problems.extend(_check_shard(d, entry, keys, summary, check_video))
    if summary["samples"] != manifest.get("num_samples"):
        problems.append(Problem(MANIFEST, "-",
                                f"num_samples {manifest.get('num_samples')} but shards hold {summary['samples']}"))
    return problems, summary


def _check_shard(d: Path, entry: dict, keys: dict[str, str], summary: dict, check_video: bool) -> list[Problem]:
    name, path = entry["name"], d / entry["name"]
    if not path.is_file():
        return [Problem(name, "-", "listed in manifest.json but missing on disk")]
    problems = []
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        problems.append(Problem(name, "-",
                                f"sha256 {digest[:12]}… does not match manifest {str(entry.get('sha256'))[:12]}…"))
    count = 0
    try:
        for raw in iter_tar_samples(path):
            count += 1
            key = raw["__key__"]
            if key in keys:
                problems.append(Problem(name, key, f"duplicate key (also in {keys[key]})"))
            keys[key] = name
            errs = _sample_errors(raw, check_video)
            if errs:
                summary["bad_samples"] += 1
                problems.extend(Problem(name, key, e) for e in errs)
    except (tarfile.TarError, OSError, EOFError) as e:
        problems.append(Problem(name, "-",
                                f"unreadable tar after {count} samples ({type(e).__name__}: {e}); truncated?"))
    summary["samples"] += count
    if count != entry.get("count"):
        problems.append(Problem(name, "-", f"manifest says {entry.get('count')} samples, shard holds {count}"))
    return problems


def _sample_errors(raw: dict[str, Any], check_video: bool) -> list[str]:
    try:
        s = decode_sample(raw, verify_all=True)
    except ContractError as e:
        return [str(e).split(": ", 1)[-1]]
    errs = sample_problems(s)
    if check_video and "mp4" in raw and not errs:
        from datamodules.video import count_frames

        try:
            n = count_frames(raw["mp4"])
        except Exception as e:  # any decoder failure is a problem of this sample
            errs.append(f"mp4 cannot be decoded ({type(e).__name__}: {e})")
        else:
            if n != s["motion"].shape[0]:
                errs.append(f"mp4 has {n} frames but motion has {s['motion'].shape[0]}")
    return errs
