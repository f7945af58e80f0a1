"""Re-extraction of the training motion with a (fine-tuned) face model: `playmate shards reextract SRC DST`.

Playmate extracts every training motion with the motion extractor M fine-tuned in stage zero
(docs/stage-zero.md). For every clip of SRC this runs M on the clip's own mp4 frames and rewrites
`motion.npy` (every frame) and `kp.npy` (x_c of frame 0, the convention of data preparation), the json
`pose_mean`/`pose_std` of the new motion, and stats.json; every other member (wav, mp4, audio.npy, the
other json fields, extra members) is kept byte for byte. The shard writer re-computes each sample's
sha256 member and checks the contract. DST mirrors SRC shard by shard (same names, same clips, same
order); its manifest's provenance records the source and the face model (sha256 of motion_extractor.pth).

Resumable: shard k is written to DST/.reextract/part-k/, moved to its final name, then recorded as done
(DST/.reextract/done-k.json: its manifest entry and statistics accumulators). A killed run continues at
the first shard not recorded; finished shards are not redone. manifest.json (its presence marks a finished
dataset) and stats.json are written when every shard is done; then .reextract/ is removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datamodules.contract import SCHEMA_VERSION, ClipSample, ContractError, pose_statistics
from datamodules.prepare.motion import extract_motion
from datamodules.shards import MANIFEST, STATS, DatasetWriter, StatsAccumulator, read_clip_samples, write_json
from datamodules.video import decode_frames
from models.liveportrait import CHECKPOINT_FILES, PRESETS, FaceModel, load_face_model
from models.liveportrait.face_model import INPUT_SIZE
from models.liveportrait.loading import resolve_base_models
from models.weights import sha256_file

log = logging.getLogger(__name__)

WORK = ".reextract"  # resume state inside DST while a run is unfinished
RUN = "run.json"


def reextract_clip(face: FaceModel, clip: ClipSample, batch_size: int = 32, where: str = "?") -> ClipSample:
    """The clip with motion, kp and pose statistics from `face`'s M on its mp4 frames; all else kept."""
    t = clip.motion.shape[0]
    if clip.mp4 is None:
        raise ContractError(f"{where}:{clip.key}: no mp4 member; re-extraction runs M on the clip's video "
                            "(prepare with write_mp4=true)")
    frames = decode_frames(clip.mp4)  # (T, 256, 256, 3) uint8
    if frames.shape != (t, INPUT_SIZE, INPUT_SIZE, 3):
        raise ContractError(f"{where}:{clip.key}: mp4 decodes to {frames.shape}, expected ({t}, {INPUT_SIZE}, "
                            f"{INPUT_SIZE}, 3) (T of motion.npy); run `playmate shards check` on the source")
    motion, kp = extract_motion(face, frames, batch_size)  # (T, 70), (21, 3)
    meta = {**clip.meta, **pose_statistics(motion)}
    return ClipSample(clip.key, motion, kp, clip.wav, meta, mp4=clip.mp4, audio_feats=clip.audio_feats,
                      extra=clip.extra)


def _run_record(src: Path, face_model_dir: str | Path, preset: str) -> dict[str, Any]:
    base = resolve_base_models(face_model_dir)
    return {"source_dir": str(src.resolve()), "face_model_dir": str(Path(face_model_dir).resolve()),
            "face_model_preset": preset,
            "motion_extractor_sha256": sha256_file(base / CHECKPOINT_FILES["motion_extractor"])}


def _start_or_resume(dst: Path, run: dict[str, Any]) -> Path:
    """The work directory of this run: new, or an unfinished one of the same source and face model."""
    work = dst / WORK
    if (work / RUN).is_file():
        before = json.loads((work / RUN).read_text())
        if before != run:
            changed = sorted(k for k in run if before.get(k) != run[k])
            raise FileExistsError(f"{dst} holds an unfinished re-extraction with other {changed}; resume it with "
                                  f"the same arguments, or delete {work} (and its shards) to start over")
        return work
    if (dst / MANIFEST).exists() or any(dst.glob("*.tar")):
        raise FileExistsError(f"{dst} already holds shards; choose an empty directory")
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / RUN, run)
    return work


def _shard(face: FaceModel, src: Path, dst: Path, work: Path, k: int, entry: dict[str, Any], batch_size: int,
           ) -> dict[str, Any]:
    """Re-extract shard k into its final place; returns the done record (manifest entry + statistics)."""
    part = work / f"part-{k:06d}"
    shutil.rmtree(part, ignore_errors=True)  # a half-written part of a killed run
    count = int(entry["count"])
    with DatasetWriter(part, "part", maxcount=count + 1, maxsize=1e15) as writer:
        for clip in read_clip_samples(src / entry["name"]):
            writer.write(reextract_clip(face, clip, batch_size, where=entry["name"]))
    written = json.loads((part / MANIFEST).read_text())["shards"]
    if len(written) != 1 or written[0]["count"] != count:
        raise ContractError(f"{src / entry['name']}: manifest says {count} samples, re-extracted {written}")
    final = dst / entry["name"]
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part / written[0]["name"], final)
    record = {"entry": {**written[0], "name": entry["name"]}, "stats": json.loads((part / STATS).read_text())}
    write_json(work / f"done-{k:06d}.json", record)
    shutil.rmtree(part)
    return record


def reextract_motion(
    src_dir: str | Path,
    dst_dir: str | Path,
    face_model_dir: str | Path,
    face_preset: str = "full",
    batch_size: int = 32,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Rewrite SRC's motion with the face model of `face_model_dir` into DST (resumable); returns the manifest."""
    src, dst = Path(src_dir), Path(dst_dir)
    if not (src / MANIFEST).is_file():
        raise FileNotFoundError(f"{src}: no {MANIFEST}; reextract reads a dataset directory written by the shard "
                                "writer")
    if dst.resolve() == src.resolve():
        raise ValueError(f"destination {dst} is the source: write the re-extracted copy to another directory")
    if face_preset not in PRESETS:
        raise ValueError(f"face preset {face_preset!r} is not one of {sorted(PRESETS)}")
    if (dst / MANIFEST).is_file() and not (dst / WORK).exists():
        if progress:
            progress(f"{dst}: already complete (manifest.json present); nothing to do")
        return json.loads((dst / MANIFEST).read_text())
    manifest = json.loads((src / MANIFEST).read_text())
    if not manifest.get("shards"):
        raise ValueError(f"{src}/{MANIFEST} lists no shards")
    run = _run_record(src, face_model_dir, face_preset)
    work = _start_or_resume(dst, run)
    face = load_face_model(face_model_dir, device, cfg=PRESETS[face_preset]())
    records, acc = [], StatsAccumulator()
    for k, entry in enumerate(manifest["shards"]):
        done = work / f"done-{k:06d}.json"
        if done.is_file():
            record = json.loads(done.read_text())
            if progress:
                progress(f"{entry['name']}: done in an earlier run")
        else:
            t0 = time.perf_counter()
            record = _shard(face, src, dst, work, k, entry, batch_size)
            if progress:
                progress(f"{entry['name']}: {entry['count']} clips re-extracted in {time.perf_counter() - t0:.1f} s")
        records.append(record["entry"])
        acc.merge(StatsAccumulator.from_json(record["stats"]))
    out = {
        "schema_version": SCHEMA_VERSION,
        "shards": records,
        "num_samples": sum(r["count"] for r in records),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "provenance": {**manifest.get("provenance", {}), "reextracted": run},
    }
    write_json(dst / STATS, acc.to_json())
    write_json(dst / MANIFEST, out)  # last: its presence marks the dataset finished
    shutil.rmtree(work)
    return out

