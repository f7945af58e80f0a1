"""The prepare loop for one slice: items → CPU workers → motion on the device → shards + ledger.

The CPU steps run in worker processes (`workers`); the main process holds the face model (and
SyncNet) on the device (`motion`), writes shards and appends the ledger (`slices`, `ledger`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from datamodules.prepare.adapters import RawItem, list_items
from datamodules.prepare.config import PrepareConfig, resolve_slice
from datamodules.prepare.ledger import LEDGER, Ledger, LedgerState
from datamodules.prepare.motion import finish_clip, load_extractor, load_sync_net, resolve_device
from datamodules.prepare.progress import Progress
from datamodules.prepare.rejections import Rejected
from datamodules.prepare.segment import ClipRejection
from datamodules.prepare.slices import (
    SliceWriter,
    check_same_settings,
    discard_unrecorded,
    finalize_slice,
    lock_slice,
    merge_slices,
    output_settings,
    slice_dir,
    slice_of,
    slice_provenance,
)
from datamodules.prepare.workers import ItemFailed, error_text, item_outcomes


def run_prepare(cfg: PrepareConfig, extractor: Any = None, sync_net: Any = None,
                detector: Any = None) -> dict[str, Any]:
    """Process this slice's items (resuming from its ledger); write its manifest/stats/summary.

    `extractor` (anything with extract_motion(frames) → (motion, kp)), `sync_net` and `detector` (anything
    with S3FD's detect_faces, or a TorchScriptDetector) may be injected (tests); otherwise they are loaded
    from face_model_dir / filters.sync_weights / detector.weights. With one slice the
    dataset's manifest.json and stats.json are written too (several slices: `merge_slices`).
    """
    index, num = resolve_slice(cfg)
    sdir = slice_dir(cfg.output, index)
    sdir.mkdir(parents=True, exist_ok=True)
    items = [it for it in list_items(cfg) if slice_of(it.item_id, num) == index]
    if cfg.max_items is not None:
        items = items[: cfg.max_items]
    lock = lock_slice(sdir)
    try:
        return _run_slice(cfg, items, index, num, sdir, extractor, sync_net, detector)
    finally:
        lock.close()


def _run_slice(cfg: PrepareConfig, items: list[RawItem], index: int, num: int, sdir: Path, extractor: Any,
               sync_net: Any, detector: Any) -> dict[str, Any]:
    name = cfg.dataset_name
    state = LedgerState.load(sdir / LEDGER)
    settings = output_settings(cfg)
    check_same_settings(state, settings, num, sdir)
    discard_unrecorded(sdir, state)
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
        for item, results in item_outcomes(todo, cfg, scratch, detector, device):
            kept = _process_item(item, results, cfg, state, writer, ledger, extractor, sync_net)
            progress.update(items=1, clips=kept)
        writer.close_shard()
    finally:
        progress.close()
        shutil.rmtree(scratch, ignore_errors=True)
    ledger.append({"type": "complete", "part": part})
    ledger.close()
    summary = finalize_slice(sdir, [it.item_id for it in items], slice_provenance(cfg, index, num))
    if num == 1:
        merge_slices(cfg.output, provenance=slice_provenance(cfg, None, 1))
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
        record.update(status="failed", error=error_text(e))
    record.update(written=written, rejected=rejected)
    ledger.append(record)
    return kept
