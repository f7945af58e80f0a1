"""The prepare loop for one slice: items → CPU workers → motion on the device → shards + ledger.

CPU steps (decode, resample, split, crop) run in `num_workers` spawned processes (or inline with
0); their clips come back in item order through .npy files in a scratch folder (never pickled
arrays), so the output does not depend on the number of workers. The main process holds the face
model (and SyncNet) on the device, writes shards and appends the ledger.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.contract import (
    FPS,
    SCHEMA_VERSION,
    ClipSample,
    clip_meta,
    decode_sample,
    encode_sample,
    make_key,
    validate_sample,
)
from datamodules.prepare.adapters import RawItem, list_items
from datamodules.prepare.config import PrepareConfig, resolve_slice
from datamodules.prepare.face import TorchScriptDetector
from datamodules.prepare.ledger import LEDGER, Ledger, LedgerState
from datamodules.prepare.motion import assert_aligned, check_yaw, extract_motion, sync_correct
from datamodules.prepare.rejections import Rejected
from datamodules.prepare.segment import ClipRejection, PreparedClip, prepare_item
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
# Progress
# ------------------------------------------------------------------------------------------------


class Progress:
    """One status line: items, clips kept, clips/s and ETA (every `every` s; a line per update when not a tty)."""

    def __init__(self, total: int, label: str, enabled: bool = True, every: float = 2.0) -> None:
        self.total, self.label, self.enabled, self.every = total, label, enabled, every
        self.items = self.clips = 0
        self.t0 = self._last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(self, items: int = 0, clips: int = 0, force: bool = False) -> None:
        self.items += items
        self.clips += clips
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < self.every):
            return
        self._last = now
        el = max(now - self.t0, 1e-9)
        rate = self.items / el
        eta_s = time.strftime("%H:%M:%S", time.gmtime((self.total - self.items) / rate)) if rate > 0 else "--:--:--"
        line = (f"{self.label} {self.items}/{self.total} items | {self.clips} clips | "
                f"{self.clips / el:.2f} clips/s | {60 * self.clips / el:.1f} clips/min | ETA {eta_s}")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.update(force=True)
        if self.enabled and self.tty:
            print(file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# CPU workers
# ------------------------------------------------------------------------------------------------


def make_detector(cfg: PrepareConfig, device: str = "cpu") -> TorchScriptDetector | None:
    if cfg.detector.kind in ("file", "auto") and cfg.detector.weights:
        return TorchScriptDetector(cfg.detector.weights, cfg.detector.min_score, device)
    return None


_W: dict[str, Any] = {}


def _init_worker(cfg: PrepareConfig, scratch: str) -> None:
    import torch

    torch.set_num_threads(1)
    _W.update(cfg=cfg, scratch=Path(scratch), detector=make_detector(cfg))


def _worker_item(item: RawItem) -> tuple[str, list[dict], str, str]:
    """Run the CPU steps of one item; arrays go to .npy files. Returns (status, clips, reason, detail)."""
    clips: list[dict] = []
    try:
        for r in prepare_item(item, _W["cfg"], _W["detector"]):
            clips.append(_to_files(r, _W["scratch"]))
    except Rejected as e:
        return "rejected", clips, e.reason, e.detail
    except Exception as e:  # a bug or an unexpected input: the item fails, the run goes on
        return "failed", clips, type(e).__name__, _error_text(e)
    return "ok", clips, "", ""


def _to_files(r: PreparedClip | ClipRejection, scratch: Path) -> dict:
    if isinstance(r, ClipRejection):
        return {"rejection": asdict(r)}
    d = {f.name: getattr(r, f.name) for f in fields(r) if f.name not in ("crops", "wav", "mp4")}
    for name in ("crops", "wav"):
        path = scratch / f"{r.clip_id}.{name}.npy"
        np.save(path, getattr(r, name), allow_pickle=False)
        d[name] = str(path)
    if r.mp4 is not None:
        (scratch / f"{r.clip_id}.mp4").write_bytes(r.mp4)
        d["mp4"] = str(scratch / f"{r.clip_id}.mp4")
    return {"clip": d}


def _from_files(d: dict) -> PreparedClip | ClipRejection:
    if "rejection" in d:
        return ClipRejection(**d["rejection"])
    c = dict(d["clip"])
    for name in ("crops", "wav"):
        path = Path(c[name])
        c[name] = np.load(path, allow_pickle=False)
        path.unlink()
    if c.get("mp4"):
        path = Path(c["mp4"])
        c["mp4"] = path.read_bytes()
        path.unlink()
    return PreparedClip(**c)


def _error_text(e: BaseException) -> str:
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    return (f"{type(e).__name__}: {e} | " + "".join(tb[-3:]).replace("\n", " ").strip())[:2000]


class ItemFailed(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _outcomes(todo: list[RawItem], cfg: PrepareConfig, scratch: Path) -> Iterator[tuple[RawItem, Iterator]]:
    """(item, iterator of its clip results) in item order; the iterator raises Rejected / ItemFailed at its end."""
    if cfg.num_workers == 0:
        det = make_detector(cfg)
        for it in todo:
            yield it, prepare_item(it, cfg, det)
        return

    def replay(out):
        status, clips, reason, detail = out
        for d in clips:
            yield _from_files(d)
        if status == "rejected":
            raise Rejected(reason, detail)
        if status == "failed":
            raise ItemFailed(detail)

    ctx = mp.get_context("spawn")  # no fork: decord/torch threads in the parent must not be inherited
    with ctx.Pool(cfg.num_workers, initializer=_init_worker, initargs=(cfg, str(scratch))) as pool:
        queue: deque = deque()
        it_iter = iter(todo)
        for it in it_iter:
            queue.append((it, pool.apply_async(_worker_item, (it,))))
            if len(queue) >= 2 * cfg.num_workers:
                break
        while queue:
            it, res = queue.popleft()
            try:
                out = res.get(timeout=cfg.item_timeout_s)
            except mp.TimeoutError:  # a hung decoder (or a worker that died): fail the item, keep going
                out = ("failed", [], "", f"no result after item_timeout_s={cfg.item_timeout_s} s (worker hung or died)")
            nxt = next(it_iter, None)
            if nxt is not None:
                queue.append((nxt, pool.apply_async(_worker_item, (nxt,))))
            yield it, replay(out)


# ------------------------------------------------------------------------------------------------
# Device part of a clip
# ------------------------------------------------------------------------------------------------


def finish_clip(pc: PreparedClip, item: RawItem, cfg: PrepareConfig, extractor: Any, sync_net: Any = None) -> ClipSample:
    """SyncNet filter (optional) → motion → exact alignment → yaw filter → a contract ClipSample."""
    from datamodules.video import encode_mp4

    crops, wav, info, mp4 = pc.crops, pc.wav, {}, pc.mp4
    start_s = pc.start_s
    if cfg.filters.sync:
        crops, wav, info = sync_correct(sync_net, crops, wav, cfg.filters.sync_min_confidence,
                                        cfg.filters.sync_max_offset, int(round(cfg.clips.min_s * FPS)))
        start_s += max(0, info["sync_offset"]) / FPS
        if len(crops) != len(pc.crops):
            mp4 = None  # offset-corrected: re-encode the trimmed crops
    motion, kp = extract_motion(extractor, crops, cfg.batch_size)
    assert_aligned(motion, wav, crops)
    check_yaw(motion, cfg.filters.max_abs_yaw_deg)
    try:
        source = Path(item.video).relative_to(Path(cfg.input)).as_posix()
    except ValueError:
        source = Path(item.video).name
    meta = clip_meta(
        clip_id=pc.clip_id, dataset=cfg.dataset_name, speaker_id=item.speaker_id, motion=motion, source=source,
        emotion=item.emotion, intensity=item.intensity, crop_box=pc.crop_box, face_box=pc.face_box,
        face_box_source=pc.box_source, item_id=item.item_id, start_s=round(start_s, 6),
        source_fps=round(pc.source_fps, 4), source_sample_rate=pc.source_sample_rate, **info,
    )
    if cfg.write_mp4 and mp4 is None:
        mp4 = encode_mp4(np.ascontiguousarray(crops), fps=FPS, crf=cfg.crf)
    return ClipSample(make_key(cfg.dataset_name, pc.clip_id), motion, kp, wav, meta, mp4=mp4)


def load_extractor(cfg: PrepareConfig, device: str) -> Any:
    if not cfg.face_model_dir:
        raise ValueError("face_model_dir: not set; point it at the LivePortrait weights (the folder holding "
                         "base_models/), e.g. face_model_dir=/data/weights/liveportrait")
    from models.liveportrait import FaceModelConfig, load_face_model

    try:
        return load_face_model(cfg.face_model_dir, device,
                               cfg=FaceModelConfig.tiny() if cfg.face_model_preset == "tiny" else None)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"face_model_dir={cfg.face_model_dir}: {e}") from None


def load_sync_net(cfg: PrepareConfig, device: str) -> Any:
    from metrics.sync import SyncNet

    return SyncNet.from_file(cfg.filters.sync_weights, config_key="filters.sync_weights").to(device).eval()


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# ------------------------------------------------------------------------------------------------
# One slice
# ------------------------------------------------------------------------------------------------


def run_prepare(cfg: PrepareConfig, extractor: Any = None, sync_net: Any = None) -> dict[str, Any]:
    """Process this slice's items (resuming from its ledger); write its manifest/stats/summary.

    `extractor` (anything with extract_motion(frames) → (motion, kp)) and `sync_net` may be injected
    (tests); otherwise they are loaded from face_model_dir / filters.sync_weights. With one slice the
    dataset's manifest.json and stats.json are written too (several slices: `merge_slices`).
    """
    index, num = resolve_slice(cfg)
    sdir = slice_dir(cfg.output, index)
    sdir.mkdir(parents=True, exist_ok=True)
    items = [it for it in list_items(cfg) if slice_of(it.item_id, num) == index]
    if cfg.max_items is not None:
        items = items[: cfg.max_items]
    lock = _lock_slice(sdir)
    try:
        return _run_slice(cfg, items, index, num, sdir, extractor, sync_net)
    finally:
        lock.close()


def _run_slice(cfg: PrepareConfig, items: list[RawItem], index: int, num: int, sdir: Path, extractor: Any,
               sync_net: Any) -> dict[str, Any]:
    name = cfg.dataset_name
    state = LedgerState.load(sdir / LEDGER)
    settings = output_settings(cfg)
    _check_same_settings(state, settings, num, sdir)
    _discard_unrecorded(sdir, state)
    todo = [it for it in items if not state.item_finished(it.item_id, cfg.retry_failed)]
    device = resolve_device(cfg.device)
    if todo:
        extractor = extractor if extractor is not None else load_extractor(cfg, device)
        if cfg.filters.sync and sync_net is None:
            sync_net = load_sync_net(cfg, device)
    ledger = Ledger(sdir / LEDGER)
    part = state.next_part
    ledger.append({"type": "run", "part": part, "slice": index, "num_slices": num, "dataset": name,
                   "items": len(items), "todo": len(todo), "settings": settings})
    scratch = sdir / "scratch"
    scratch.mkdir(exist_ok=True)
    writer = SliceWriter(sdir, f"{name}-s{index:03d}-p{part:03d}", cfg.maxcount, ledger)
    progress = Progress(len(todo), f"[prepare {name} s{index:03d}/{num}]", cfg.progress)
    try:
        for item, results in _outcomes(todo, cfg, scratch):
            kept = _process_item(item, results, cfg, state, writer, ledger, extractor, sync_net)
            progress.update(items=1, clips=kept)
        writer.close_shard()
    finally:
        progress.close()
        shutil.rmtree(scratch, ignore_errors=True)
    ledger.append({"type": "complete", "part": part})
    ledger.close()
    summary = finalize_slice(sdir, [it.item_id for it in items], _provenance(cfg, index, num))
    if num == 1:
        merge_slices(cfg.output, provenance=_provenance(cfg, None, 1))
    return summary


def _process_item(item, results, cfg, state, writer, ledger, extractor, sync_net) -> int:
    written, rejected, kept = [], [], 0
    record: dict[str, Any] = {"type": "item", "item": item.item_id, "video": item.video}
    try:
        for r in results:
            if isinstance(r, ClipRejection):
                ledger.append({"type": "clip", "status": "rejected", "clip": r.clip_id, "item": item.item_id,
                               "reason": r.reason, "detail": r.detail})
                rejected.append(r.clip_id)
                continue
            if r.clip_id in state.done_clips:  # already in a closed shard from an earlier run
                written.append(r.clip_id)
                continue
            try:
                sample = finish_clip(r, item, cfg, extractor, sync_net)
            except Rejected as e:
                ledger.append({"type": "clip", "status": "rejected", "clip": r.clip_id, "item": item.item_id,
                               "reason": e.reason, "detail": e.detail})
                rejected.append(r.clip_id)
                continue
            writer.write(sample, r.clip_id, item.item_id)
            written.append(r.clip_id)
            kept += 1
        record.update(status="done")
    except Rejected as e:
        record.update(status="rejected", reason=e.reason, detail=e.detail)
    except ItemFailed as e:
        record.update(status="failed", error=e.error)
    except Exception as e:  # never crash the run on one item; the error is in the ledger and summary
        record.update(status="failed", error=_error_text(e))
    record.update(written=written, rejected=rejected)
    ledger.append(record)
    return kept


def _lock_slice(sdir: Path):
    """An exclusive lock on the slice folder: two processes must never write one slice (e.g. a requeue overlap)."""
    import fcntl

    f = open(sdir / ".lock", "w")  # noqa: SIM115  (kept open: the lock lives as long as the file)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ValueError(f"{sdir}: another prepare process is writing this slice; wait for it or stop it") from None
    return f


def _check_same_settings(state: LedgerState, settings: dict, num: int, sdir: Path) -> None:
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


def _discard_unrecorded(sdir: Path, state: LedgerState) -> None:
    """Delete shards no `shard` record names (left open by a killed run) and old scratch files."""
    for p in sdir.glob("*.tar"):
        if p.name not in state.shards:
            p.unlink()
    shutil.rmtree(sdir / "scratch", ignore_errors=True)
    for name in state.shards:
        if not (sdir / name).is_file():
            raise ValueError(f"{sdir / name}: recorded in the ledger as closed but missing on disk; restore it, or "
                             f"delete {sdir} to redo this slice")


def _provenance(cfg: PrepareConfig, index: int | None, num: int) -> dict[str, Any]:
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
    stats = acc.to_json() if acc.clips else {"accumulators": _zero_acc(), "num_clips": 0, "schema_version": SCHEMA_VERSION}
    write_json(sdir / STATS, stats)
    summary = state.summary(item_ids)
    write_json(sdir / SUMMARY, summary)
    return summary


def _zero_acc() -> dict[str, Any]:
    a = StatsAccumulator()
    return {"frames": 0, "clips": 0, "exp_sum": a.exp_sum.tolist(), "exp_sumsq": a.exp_sumsq.tolist(),
            "pose_std_sum": a.pose_std_sum.tolist()}


# ------------------------------------------------------------------------------------------------
# Merge
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
        raise ValueError(f"{output}: slices {missing} are not complete; rerun those array tasks (they resume), then merge")
    if len(nums) != 1:
        raise ValueError(f"{output}: slices were made with different num_slices {sorted(nums)}; use one output per layout")
    num = nums.pop()
    have = {int(d.name[1:]) for d in sdirs}
    if have != set(range(num)):
        raise ValueError(f"{output}: num_slices={num} but slices {sorted(set(range(num)) - have)} are missing; run them")
    prov = provenance or json.loads((sdirs[0] / MANIFEST).read_text()).get("provenance", {})
    prov = {**prov, "slice": None, "slices": [d.name for d in sdirs]}
    kept = sum(json.loads((d / MANIFEST).read_text())["num_samples"] for d in sdirs)
    if kept == 0:
        raise ValueError(f"{output}: no clip was kept in any slice; see {output}/slices/*/summary.json for the reasons")
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
