"""Dataset adapters: a raw dataset tree → a sorted list of `RawItem`s (one video or video segment each).

Each adapter documents the layout it expects and raises `LayoutError` naming the first path that
does not match. Items with a known problem that only concerns themselves (a missing label, a CSV
row whose video was never downloaded) are listed with `problem` set: the pipeline records them as
rejected with that reason instead of stopping the run.

Layouts marked "assumed" follow the public dataset descriptions; check them against your copy
(docs/data-preparation.md).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datamodules.contract import EMOTIONS

VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".avi", ".webm")


class LayoutError(ValueError):
    """The input directory does not have the layout the adapter expects."""


@dataclass(frozen=True)
class RawItem:
    """One unit of work: a video (or a segment of one) with its labels and annotations."""

    item_id: str  # unique within the dataset and stable across runs (ledger key; clip ids derive from it)
    video: str
    speaker_id: str
    audio: str | None = None  # a separate audio file, used when the video has no audio stream
    emotion: str | None = None  # one of contract.EMOTIONS
    intensity: float | None = None
    start_s: float = 0.0  # segment inside the video (AVSpeech)
    end_s: float | None = None
    face_centre: tuple[float, float] | None = None  # annotated face centre (x, y) in [0, 1] (AVSpeech)
    problem: str | None = None  # "reason: detail" → rejected without decoding


def _videos(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())


def _require_dir(root: Path, layout: str) -> None:
    if not root.is_dir():
        raise LayoutError(f"input={root} is not a directory; expected layout: {layout}")


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-]", "_", s)


# ------------------------------------------------------------------------------------------------
# MEAD
# ------------------------------------------------------------------------------------------------

MEAD_LAYOUT = ("{actor}/video/{view}/{emotion}/level_{1-3}/{clip}.mp4 "
               "(optional audio {actor}/audio/{emotion}/level_{n}/{clip}.m4a)")
_MEAD_RE = re.compile(
    r"^(?P<actor>[^/]+)/video/(?P<view>[^/]+)/(?P<emotion>[^/]+)/level_(?P<level>\d+)/(?P<clip>[^/]+)$"
)


def list_mead(root: Path, cfg) -> list[RawItem]:
    """MEAD: `{actor}/video/{view}/{emotion}/level_{n}/{clip}.mp4`; emotion and intensity (level) labels.

    The eight MEAD emotion folder names are the contract labels. Only `views` (default front) are kept.
    A clip without an audio stream uses `{actor}/audio/{emotion}/level_{n}/{clip}.m4a` if present.
    """
    _require_dir(root, MEAD_LAYOUT)
    items = []
    for p in _videos(root):
        rel = p.relative_to(root).as_posix()
        m = _MEAD_RE.match(rel)
        if m is None or m["emotion"] not in EMOTIONS:
            why = f"emotion folder must be one of {list(EMOTIONS)}" if m else "path does not match"
            raise LayoutError(f"{p}: {why}; MEAD layout is {MEAD_LAYOUT}")
        if m["view"] not in cfg.views:
            continue
        stem = Path(m["clip"]).stem
        audio = root / m["actor"] / "audio" / m["emotion"] / f"level_{m['level']}" / f"{stem}.m4a"
        items.append(RawItem(
            item_id=_safe(f"{m['actor']}_{m['view']}_{m['emotion']}_l{m['level']}_{stem}"),
            video=str(p), speaker_id=m["actor"], audio=str(audio) if audio.is_file() else None,
            emotion=m["emotion"], intensity=float(m["level"]),
        ))
    if not items:
        raise LayoutError(f"{root}: no videos for views {list(cfg.views)}; MEAD layout is {MEAD_LAYOUT}")
    return items


# ------------------------------------------------------------------------------------------------
# MAFW (single-label clips)
# ------------------------------------------------------------------------------------------------

MAFW_LAYOUT = ("clips/{name}.mp4 plus a label file (labels=, default labels.txt): "
               "lines '{name}[.mp4] {label}' (space, tab or comma)")
# MAFW's 11 single labels → contract labels; anxiety, helplessness, disappointment have no class (excluded).
MAFW_MAP = {
    "anger": "angry", "disgust": "disgusted", "contempt": "contempt", "fear": "fear", "happiness": "happy",
    "neutral": "neutral", "sadness": "sad", "surprise": "surprised",
}
MAFW_UNMAPPED = ("anxiety", "helplessness", "disappointment")


def read_label_file(path: Path) -> dict[str, str]:
    """`name label` per line (space, tab or comma separated; '#' comments; optional header 'name,label')."""
    if not path.is_file():
        raise LayoutError(f"label file {path} not found; set labels=PATH")
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [x for x in re.split(r"[,\s]+", line) if x]
        if len(parts) < 2:
            raise LayoutError(f"{path}:{n}: expected 'name label', got {line!r}")
        if n == 1 and parts[0].lower() in ("name", "clip", "path", "file"):
            continue
        out[Path(parts[0]).stem] = parts[1].lower()
    return out


def list_mafw(root: Path, cfg) -> list[RawItem]:
    """MAFW: `clips/{name}.mp4` and a single-label file; labels map to the contract classes (MAFW_MAP)."""
    clips = root / "clips"
    _require_dir(clips, MAFW_LAYOUT)
    labels = read_label_file(Path(cfg.labels) if cfg.labels else root / "labels.txt")
    items = []
    for p in _videos(clips):
        label = labels.get(p.stem)
        problem = emotion = None
        if label is None:
            problem = f"missing_label: {p.name} has no line in the label file"
        elif label in MAFW_MAP or label in EMOTIONS:
            emotion = MAFW_MAP.get(label, label)
        else:
            problem = f"unmapped_label: MAFW label {label!r} has no contract class" + (
                "" if label in MAFW_UNMAPPED else f" (known: {sorted(MAFW_MAP)} + {list(MAFW_UNMAPPED)})")
        items.append(RawItem(item_id=_safe(p.stem), video=str(p), speaker_id=_safe(p.stem), emotion=emotion,
                             intensity=None, problem=problem))
    if not items:
        raise LayoutError(f"{clips}: no videos; MAFW layout is {MAFW_LAYOUT}")
    return items


# ------------------------------------------------------------------------------------------------
# Flat or nested folders of talking-head videos (HDTF, CelebV-Text, Acappella, generic)
# ------------------------------------------------------------------------------------------------

HDTF_LAYOUT = ("{Source}_{Name}_{NNN}.mp4 directly under input (e.g. WDA_BarackObama_000.mp4); "
               "speaker = name without _NNN")
CELEBV_LAYOUT = "videos under input (any depth), {clip}.mp4; speaker = clip name (identities are not labelled)"
ACAPPELLA_LAYOUT = "{split}/{language}/{video_id}.mp4 under input (assumed; any depth works); speaker = video id"
FOLDER_LAYOUT = ("videos under input (any depth); optional labels=CSV with header path,emotion,intensity,speaker "
                 "(path relative to input; empty emotion = null)")


def _flat_items(root: Path, layout: str, speaker: Callable[[Path], str], flat: bool = False) -> list[RawItem]:
    _require_dir(root, layout)
    items = []
    for p in _videos(root):
        rel = p.relative_to(root)
        if flat and len(rel.parts) != 1:
            raise LayoutError(f"{p}: videos must lie directly under input; layout is {layout}")
        items.append(RawItem(item_id=_safe(rel.with_suffix("").as_posix()), video=str(p), speaker_id=_safe(speaker(p))))
    if not items:
        raise LayoutError(f"{root}: no videos ({', '.join(VIDEO_EXTS)}); layout is {layout}")
    return items


def list_hdtf(root: Path, cfg) -> list[RawItem]:
    """HDTF: flat folder of `{Source}_{Name}_{NNN}.mp4` (the released file names)."""
    return _flat_items(root, HDTF_LAYOUT, lambda p: re.sub(r"_\d+$", "", p.stem), flat=True)


def list_celebvtext(root: Path, cfg) -> list[RawItem]:
    """CelebV-Text: the released face clips (already face-centred), any folder depth."""
    return _flat_items(root, CELEBV_LAYOUT, lambda p: p.stem)


def list_acappella(root: Path, cfg) -> list[RawItem]:
    """Acappella: singing videos (no vocal separation is applied: docs/data-preparation.md)."""
    return _flat_items(root, ACAPPELLA_LAYOUT, lambda p: p.stem)


def list_folder(root: Path, cfg) -> list[RawItem]:
    """Any folder of videos; with labels= a CSV `path,emotion,intensity,speaker` (a video without a row is rejected)."""
    items = _flat_items(root, FOLDER_LAYOUT, lambda p: p.parent.name if p.parent != root else p.stem)
    if not cfg.labels:
        return items
    path = Path(cfg.labels)
    if not path.is_file():
        raise LayoutError(f"labels={path}: file not found (a CSV with header path,emotion,intensity,speaker)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise LayoutError(f"{path}: first line must be a header with at least 'path' "
                              "(and emotion,intensity,speaker)")
        rows = {}
        for n, row in enumerate(reader, 2):
            emo = (row.get("emotion") or "").strip() or None
            if emo is not None and emo not in EMOTIONS:
                raise LayoutError(f"{path}:{n}: emotion {emo!r} is not one of {list(EMOTIONS)} (or empty)")
            rows[Path(row["path"]).as_posix()] = row
    out = []
    for it in items:
        row = rows.get(Path(it.video).relative_to(root).as_posix())
        if row is None:
            problem = f"missing_label: {Path(it.video).name} has no row in {path}"
            out.append(RawItem(**{**it.__dict__, "problem": problem}))
            continue
        inten = (row.get("intensity") or "").strip()
        out.append(RawItem(**{**it.__dict__, "emotion": (row.get("emotion") or "").strip() or None,
                              "intensity": float(inten) if inten else None,
                              "speaker_id": _safe((row.get("speaker") or "").strip() or it.speaker_id)}))
    return out


# ------------------------------------------------------------------------------------------------
# AVSpeech
# ------------------------------------------------------------------------------------------------

AVSPEECH_LAYOUT = ("a CSV (labels=, default avspeech_train.csv under input) with rows 'youtube_id,start,end,x,y' "
                   "(seconds; face centre x, y in [0, 1]) and the downloaded videos as {youtube_id}.mp4 under input "
                   "(or input/videos/)")


def list_avspeech(root: Path, cfg) -> list[RawItem]:
    """AVSpeech: one item per CSV row, the segment [start, end] of `{youtube_id}.mp4`, face centre annotated."""
    _require_dir(root, AVSPEECH_LAYOUT)
    path = Path(cfg.labels) if cfg.labels else root / "avspeech_train.csv"
    if not path.is_file():
        raise LayoutError(f"{path}: AVSpeech CSV not found; set labels=PATH. Layout: {AVSPEECH_LAYOUT}")
    items = []
    with path.open(newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or row[0].startswith("#"):
                continue
            try:
                yid, start, end, x, y = row[0].strip(), *(float(v) for v in row[1:5])
            except (ValueError, TypeError):
                raise LayoutError(f"{path}:{n}: expected 'youtube_id,start,end,x,y', got {row!r}") from None
            video = next((c for c in (root / f"{yid}.mp4", root / "videos" / f"{yid}.mp4") if c.is_file()), None)
            items.append(RawItem(
                item_id=_safe(f"{yid}_{round(start * 1000):09d}"), video=str(video or root / f"{yid}.mp4"),
                speaker_id=_safe(yid), start_s=start, end_s=end, face_centre=(x, y),
                problem=None if video else f"missing_video: {yid}.mp4 not found under {root} or {root / 'videos'}",
            ))
    if not items:
        raise LayoutError(f"{path}: no rows; layout: {AVSPEECH_LAYOUT}")
    return items


ADAPTERS: dict[str, Callable[[Path, object], list[RawItem]]] = {
    "avspeech": list_avspeech,
    "celebvtext": list_celebvtext,
    "acappella": list_acappella,
    "mead": list_mead,
    "mafw": list_mafw,
    "hdtf": list_hdtf,
    "folder": list_folder,
}


def list_items(cfg) -> list[RawItem]:
    """All items of the configured dataset, sorted by id; ids must be unique."""
    items = sorted(ADAPTERS[cfg.dataset](Path(cfg.input), cfg), key=lambda it: it.item_id)
    for a, b in zip(items, items[1:]):
        if a.item_id == b.item_id:
            raise LayoutError(f"{a.video} and {b.video} map to the same item id {a.item_id!r}; rename one")
    return items
