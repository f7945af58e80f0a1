"""The published Playmate HDTF numbers and whether this evaluation's protocol matches the table's.

Source: Playmate (Ma et al., ICML 2025; arXiv 2502.07203), Table 1, HDTF rows. The paper does not
describe its evaluation code; the protocol checked here is the one published talking-head tables on
HDTF use (`configs.evaluation.PROTOCOLS["hdtf"]`): 512x512 renders against 512x512 ground-truth
crops of the HDTF test clips, FID over every frame, FVD (I3D) over every non-overlapping 16-frame
clip, Sync-C/Sync-D with SyncNet on syncnet_python's S3FD face-track crops, CSIM with ArcFace on
5-point-aligned faces.

`comparison(protocol, scalars)` gives, per metric with a published number, that number, the sample
count behind ours, and "yes" or every protocol detail that differs ("weights: …", "resolution: …",
"crop: …", "sample count: …", "data: …"). Results with any random-weight network get no comparison.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from models.face_tracks import TrackParams

SOURCE = "Playmate (arXiv 2502.07203), Table 1, HDTF"
PUBLISHED: dict[str, float] = {  # our scalar name → the published value
    "fid": 19.138, "fvd": 231.048, "sync_c": 8.580, "sync_d": 6.985, "csim": 0.848, "lpips": 0.099,
}
TABLE_SIZE = 512  # renders and ground-truth crops, pixels per side
FVD_CLIP_LEN = 16
FRAME_METRICS = ("fid", "fvd", "csim", "lpips")  # compare generated frames with ground-truth frames


def _weights(p: dict[str, Any], name: str) -> list[str]:
    """A network without a weights file (injected, or random) is a different network."""
    m = p["metrics"].get(name, {})
    w = m.get("weights") or m.get("backbone") or {}
    return [] if w.get("sha256") else [f"weights: no weights file for the {name.upper()} network (injected network)"]


def _common(p: dict[str, Any], name: str) -> list[str]:
    """Differences shared by every rendered metric: data, renderer, clips and frames, resolution."""
    out = []
    data = [d for d in p.get("datasets", []) if "hdtf" not in d.lower()]
    if data:
        out.append(f"data: {', '.join(data)} clips, not the HDTF test set")
    face = p.get("face_model", {})
    if face.get("dir") == "injected":
        out.append("weights: injected renderer, not LivePortrait")
    elif face.get("preset") == "tiny":
        out.append("weights: renderer is the tiny test preset, not LivePortrait")
    if p.get("all_clips_of_data") is False:
        out.append(f"sample count: the first {p['clips']} clips of the data, not all (num_clips / --max-clips 0)")
    elif p.get("all_clips_of_data") is None:
        out.append("sample count: a share of the clips (evaluation during training)")
    if p.get("clips_cut"):
        out.append(f"sample count: {p['clips_cut']} clips cut to max_frames {p['settings']['max_frames']} "
                   "(whole clips: max_frames / --max-frames 0)")
    size = p["settings"]["eval_size"]
    if size != TABLE_SIZE:
        out.append(f"resolution: frames compared at {size}x{size}, not {TABLE_SIZE}x{TABLE_SIZE}")
    small = [g for g in p.get("gt_frame_sizes", []) if g < TABLE_SIZE]
    if name in FRAME_METRICS and small:
        out.append(f"resolution: ground truth is {small[0]}x{small[0]} video upscaled, not {TABLE_SIZE}x{TABLE_SIZE} "
                   "crops")
    return out


def _fvd(p: dict[str, Any]) -> list[str]:
    m, out = p["metrics"]["fvd"], []
    if m.get("clip_len") != FVD_CLIP_LEN:
        out.append(f"sample count: {m.get('clip_len')}-frame clips, not {FVD_CLIP_LEN}")
    if m.get("clip_sampling") != "all_non_overlapping":
        out.append(f"sample count: '{m.get('clip_sampling')}' clip per video, not every non-overlapping clip "
                   "(fvd_clip_sampling=all_non_overlapping)")
    if p.get("fvd_skipped_clips"):
        out.append(f"sample count: {p['fvd_skipped_clips']} clips shorter than {m.get('clip_len')} frames left out")
    return out


def _sync(p: dict[str, Any]) -> list[str]:
    m, out = p["metrics"]["sync"], []
    if m.get("crop_mode") != "s3fd_track":
        out.append("crop: whole face crop resized to 224, not S3FD face tracks (--s3fd sfd_face.pth)")
        return out
    if not m.get("face_detector", {}).get("sha256"):
        out.append("weights: no S3FD weights file")
    ref = asdict(TrackParams())
    changed = [f"{k} {v} (syncnet_python {ref[k]})" for k, v in m.get("tracking", {}).items()
               if k in ref and v != ref[k] and not (isinstance(ref[k], tuple) and tuple(v) == ref[k])]
    if changed:
        out.append("crop: " + ", ".join(changed))
    return out


def _csim(p: dict[str, Any]) -> list[str]:
    # no facial landmarks travel with the clips: ArcFace sees whole crops, not its 5-point alignment
    return ["crop: no landmarks available: whole face crop resized to 112x112, not ArcFace's 5-point alignment"]


def _samples(p: dict[str, Any], name: str) -> str:
    m = p["metrics"]
    if name == "fid":
        return f"{m['fid'].get('n_fake')} / {m['fid'].get('n_real')} frames"
    if name == "fvd":
        return f"{m['fvd'].get('n_fake')} / {m['fvd'].get('n_real')} clips of {m['fvd'].get('clip_len')} frames"
    if name.startswith("sync"):
        s = m["sync"]
        left = (s.get("skipped") or 0) + (s.get("no_track") or 0)
        return f"{s.get('num_videos')} videos" + (f" ({left} without a score)" if left else "")
    if name == "csim":
        return f"{m['csim'].get('num_pairs')} frame pairs"
    return f"{p.get('rendered_frames')} frames"


def comparison(protocol: dict[str, Any], scalars: dict[str, float]) -> dict[str, dict[str, Any]] | None:
    """{metric: {published, samples, comparable}} for our metrics with a published number; None when a
    random-weight network produced any number (nothing of such a run is comparable)."""
    if protocol.get("random_weights"):
        return None
    out: dict[str, dict[str, Any]] = {}
    for name, value in PUBLISHED.items():
        if name not in scalars:
            continue
        metric = "sync" if name.startswith("sync") else name
        diffs = _common(protocol, metric) + _weights(protocol, metric)
        diffs += {"fvd": _fvd, "sync": _sync, "csim": _csim}.get(metric, lambda p: [])(protocol)
        out[name] = {"published": value, "samples": _samples(protocol, metric),
                     "comparable": "yes" if not diffs else "no: " + "; ".join(dict.fromkeys(diffs))}
    return out


def protocol_rows(protocol: dict[str, Any]) -> list[list[Any]]:
    """The published-table protocol, item by item, next to what this run did (for the report)."""
    s, m = protocol["settings"], protocol["metrics"]
    fvd, sync = m.get("fvd", {}), m.get("sync", {})
    gt = "/".join(str(g) for g in protocol.get("gt_frame_sizes", [])) or "—"
    clips = "all" if protocol.get("all_clips_of_data") else f"first {protocol['clips']}"
    return [
        ["data", "HDTF test clips", ", ".join(protocol.get("datasets", []))],
        ["resolution", f"{TABLE_SIZE}x{TABLE_SIZE} renders vs {TABLE_SIZE}x{TABLE_SIZE} ground-truth crops",
         f"512 renders → {s['eval_size']}; ground truth {gt} → {s['eval_size']}"],
        ["clips and frames", "every frame of every clip",
         f"{clips} clips, {protocol.get('clips_cut', 0)} cut to {s['max_frames']} frames"],
        ["FID", "over all frames", f"{m['fid'].get('n_fake')} / {m['fid'].get('n_real')} frames" if "fid" in m
         else "not computed"],
        ["FVD", f"I3D, every non-overlapping {FVD_CLIP_LEN}-frame clip",
         f"{fvd.get('clip_sampling')} {fvd.get('clip_len')}-frame clips, {fvd.get('n_fake')} / {fvd.get('n_real')}"
         if fvd else "not computed"],
        ["Sync-C/D", "SyncNet on syncnet_python's S3FD face-track crops",
         f"{sync.get('crop_mode')} crop, {sync.get('num_videos')} videos" if sync else "not computed"],
        ["CSIM", "ArcFace on 5-point-aligned faces", "whole crop 112x112 (no landmarks available)"
         if "csim" in m else "not computed"],
    ]
