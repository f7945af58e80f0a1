"""Slices of a prepared dataset: which slice an item belongs to, the slice folder (lock, settings check,
clean-up after a killed run), its shard writer, its manifest/stats/summary, and the merge of all slices.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from datamodules.contract import SCHEMA_VERSION, ClipSample, decode_sample, encode_sample, validate_sample
from datamodules.prepare.config import PrepareConfig
from datamodules.prepare.ledger import LEDGER, Ledger, LedgerState
from datamodules.shards import MANIFEST, STATS, StatsAccumulator, merge_datasets, sha256_file, write_json

SUMMARY = "summary.json"
# Settings that do not change what is written (may differ between runs of one slice).
_RUNTIME_KEYS = {"action", "num_workers", "progress", "device", "max_items", "slice", "num_slices", "retry_failed",
                 "batch_size", "face_model_dir", "item_timeout_s"}


def slice_of(item_id: str, num_slices: int) -> int:
    """Deterministic slice of an item: sha1 of its id modulo num_slices (stable when items are added)."""
    return int(hashlib.sha1(item_id.encode()).hexdigest()[:12], 16) % num_slices


def slice_dir(output: str | Path, index: int) -> Path:
    return Path(output) / "slices" / f"s{index:03d}"


def output_settings(cfg: PrepareConfig) -> dict[str, Any]:
    d = asdict(cfg)
    return {k: v for k, v in d.items() if k not in _RUNTIME_KEYS}


# ------------------------------------------------------------------------------------------------
# The slice folder: one writer at a time, same settings, no leftovers of a killed run
# ------------------------------------------------------------------------------------------------


def lock_slice(sdir: Path):
    """An exclusive lock on the slice folder: two processes must never write one slice (e.g. a requeue overlap)."""
    import fcntl

    f = open(sdir / ".lock", "w")  # noqa: SIM115  (kept open: the lock lives as long as the file)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ValueError(f"{sdir}: another prepare process is writing this slice; wait for it or stop it") from None
    return f


def check_same_settings(state: LedgerState, settings: dict, num: int, sdir: Path) -> None:
    if not state.runs:
        return
    first = state.runs[0]
    if first.get("num_slices") != num:
        raise ValueError(f"{sdir}: this slice was started with num_slices={first.get('num_slices')}, now {num}; "
                         "rerun with the same num_slices (items map to slices by it) or use a new output=")
    old = first.get("settings", {})
    diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if diff:
        raise ValueError(f"{sdir}: settings {diff} differ from the run that started this slice "
                         f"(was {[old.get(k) for k in diff]}); restore them or use a new output=")


def discard_unrecorded(sdir: Path, state: LedgerState) -> None:
    """Delete shards no `shard` record names (left open by a killed run) and old scratch files."""
    for p in sdir.glob("*.tar"):
        if p.name not in state.shards:
            p.unlink()
    shutil.rmtree(sdir / "scratch", ignore_errors=True)
    for name in state.shards:
        if not (sdir / name).is_file():
            raise ValueError(f"{sdir / name}: recorded in the ledger as closed but missing on disk; restore it, or "
                             f"delete {sdir} to redo this slice")


# ------------------------------------------------------------------------------------------------
# Shard writer that records closed shards in the ledger
# ------------------------------------------------------------------------------------------------


class SliceWriter:
    """Validated samples → `{prefix}-{NNNNNN}.tar`; each closed shard is fsync'ed, hashed and recorded."""

    def __init__(self, directory: Path, prefix: str, maxcount: int, ledger: Ledger) -> None:
        self.dir, self.prefix, self.maxcount, self.ledger = directory, prefix, maxcount, ledger
        self.index = 0
        self._f = self._tar = None

    def write(self, clip: ClipSample, clip_id: str, item_id: str) -> str:
        import webdataset as wds

        encoded = encode_sample(clip)
        validate_sample(decode_sample(encoded))
        if self._tar is None:
            self._name = f"{self.prefix}-{self.index:06d}.tar"
            self._f = open(self.dir / self._name, "wb")
            self._tar = wds.TarWriter(self._f, mtime=0.0)
            self._clips, self._keys, self._acc = [], [], StatsAccumulator()
        self._tar.write(encoded)
        self._clips.append(clip_id)
        self._keys.append(clip.key)
        self._acc.add(clip.motion)
        name = self._name
        self.ledger.append({"type": "clip", "status": "done", "clip": clip_id, "item": item_id, "shard": name})
        if len(self._clips) >= self.maxcount:
            self.close_shard()
        return name

    def close_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        path = self.dir / self._name
        acc = self._acc.to_json()["accumulators"]
        self.ledger.append({"type": "shard", "name": self._name, "count": len(self._clips), "sha256": sha256_file(path),
                            "clips": self._clips, "keys": self._keys, "accumulators": acc})
        self._tar = self._f = None
        self.index += 1


# ------------------------------------------------------------------------------------------------
# Manifest, statistics and summary of one slice
# ------------------------------------------------------------------------------------------------


def slice_provenance(cfg: PrepareConfig, index: int | None, num: int) -> dict[str, Any]:
    return {
        "made_by": "playmate prepare", "dataset": cfg.dataset_name, "adapter": cfg.dataset, "input": cfg.input,
        "slice": index, "num_slices": num, "settings": output_settings(cfg),
    }


def finalize_slice(sdir: Path, item_ids: list[str], provenance: dict[str, Any]) -> dict[str, Any]:
    """manifest.json / stats.json / summary.json of one slice from its ledger's closed shards."""
    state = LedgerState.load(sdir / LEDGER)
    acc = StatsAccumulator()
    shards = []
    for name in sorted(state.shards):
        rec = state.shards[name]
        shards.append({"name": name, "count": rec["count"], "sha256": rec["sha256"]})
        acc.merge(StatsAccumulator.from_json({"accumulators": rec["accumulators"]}))
    write_json(sdir / MANIFEST, {
        "schema_version": SCHEMA_VERSION, "shards": shards, "num_samples": sum(s["count"] for s in shards),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "provenance": provenance,
    })
    empty = {"accumulators": _zero_acc(), "num_clips": 0, "schema_version": SCHEMA_VERSION}
    stats = acc.to_json() if acc.clips else empty
    write_json(sdir / STATS, stats)
    summary = state.summary(item_ids)
    write_json(sdir / SUMMARY, summary)
    return summary


def _zero_acc() -> dict[str, Any]:
    a = StatsAccumulator()
    return {"frames": 0, "clips": 0, "exp_sum": a.exp_sum.tolist(), "exp_sumsq": a.exp_sumsq.tolist(),
            "pose_std_sum": a.pose_std_sum.tolist()}


# ------------------------------------------------------------------------------------------------
# Merge of all slices, and the summary
# ------------------------------------------------------------------------------------------------


def merge_slices(output: str | Path, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """manifest.json + stats.json + summary.json over every slice of `output` (all must be complete)."""
    output = Path(output)
    sdirs = sorted((output / "slices").glob("s[0-9][0-9][0-9]"))
    if not sdirs:
        raise ValueError(f"{output}/slices: no slice directories; run prepare (action=run) first")
    nums, missing = set(), []
    for d in sdirs:
        st = LedgerState.load(d / LEDGER)
        if not st.runs or not st.complete_after_last_run or not (d / MANIFEST).is_file():
            missing.append(d.name)
            continue
        nums.add(st.runs[0]["num_slices"])
    if missing:
        raise ValueError(f"{output}: slices {missing} are not complete; rerun those array tasks (they resume), "
                         "then merge")
    if len(nums) != 1:
        raise ValueError(f"{output}: slices were made with different num_slices {sorted(nums)}; "
                         "use one output per layout")
    num = nums.pop()
    have = {int(d.name[1:]) for d in sdirs}
    if have != set(range(num)):
        raise ValueError(f"{output}: num_slices={num} but slices {sorted(set(range(num)) - have)} are missing; "
                         "run them")
    prov = provenance or json.loads((sdirs[0] / MANIFEST).read_text()).get("provenance", {})
    prov = {**prov, "slice": None, "slices": [d.name for d in sdirs]}
    kept = sum(json.loads((d / MANIFEST).read_text())["num_samples"] for d in sdirs)
    if kept == 0:
        raise ValueError(f"{output}: no clip was kept in any slice; see {output}/slices/*/summary.json "
                         "for the reasons")
    manifest = merge_datasets(sdirs, output, provenance=prov)
    write_json(output / SUMMARY, _merge_summaries([json.loads((d / SUMMARY).read_text()) for d in sdirs]))
    return manifest


def _merge_summaries(parts: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"items": {"total": 0, "finished": 0, "done": 0, "rejected": {}, "failed": 0},
                           "clips": {"kept": 0, "rejected": {}}, "rejected_items": [], "rejected_clips": [],
                           "failed_items": []}
    for p in parts:
        for k in ("total", "finished", "done", "failed"):
            out["items"][k] += p["items"][k]
        out["clips"]["kept"] += p["clips"]["kept"]
        for sec in ("items", "clips"):
            for reason, n in p[sec]["rejected"].items():
                out[sec]["rejected"][reason] = out[sec]["rejected"].get(reason, 0) + n
        for k in ("rejected_items", "rejected_clips", "failed_items"):
            out[k].extend(p[k])
    for k, key in (("rejected_items", "item"), ("rejected_clips", "clip"), ("failed_items", "item")):
        out[k].sort(key=lambda d: d[key])
    return out


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable kept / rejected-by-reason / failed table."""
    it, cl = s["items"], s["clips"]
    lines = [f"items: {it['total']} total, {it['done']} done, {sum(it['rejected'].values())} rejected, "
             f"{it['failed']} failed, {it['total'] - it['finished']} not finished",
             f"clips kept: {cl['kept']}"]
    for sec, title in (("items", "items rejected"), ("clips", "clips rejected")):
        for reason, n in sorted(s[sec]["rejected"].items()):
            lines.append(f"  {title} — {reason}: {n}")
    for r in s["rejected_items"][:20]:
        lines.append(f"  rejected {r['item']}: {r['reason']}: {r['detail']}")
    for r in s["failed_items"][:20]:
        lines.append(f"  FAILED {r['item']}: {r['error'][:300]}")
    return "\n".join(lines)
