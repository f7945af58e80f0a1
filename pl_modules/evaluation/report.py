"""Offline evaluation report: OUT/report.md, OUT/report.html (self-contained) and OUT/metrics.json.

The report is a list of blocks (heading, text, table, image, code) rendered twice: to Markdown
(images as PNG files next to it) and to HTML (images inlined as base64). Every number sits next to
its protocol: weights files and SHA-256 (or RANDOM WEIGHTS), crops and resolutions, frame counts,
the FVD variant and sample counts. With random-weight feature networks the title says so.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pl_modules.evaluation.evaluator import RANDOM_TITLE, EvalResult
from pl_modules.evaluation.published import SOURCE, comparison, protocol_rows

# metric → (direction, meaning); the order is the order of the results table
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "mouth_audio_r": ("↑", "Pearson r, generated mouth opening vs audio RMS envelope (lag 0)"),
    "mouth_audio_r_gt": ("ref", "same for the ground-truth motion (what the data allows)"),
    "mouth_audio_lag": ("→0", "lag (frames) maximising r, generated (> 0: mouth follows audio)"),
    "mouth_audio_lag_gt": ("ref", "same for ground truth"),
    "pose_angle_l1_deg": ("info", "mean |Δ angle| (deg) of generated vs ground-truth head pose "
                                  "(not a target: pose is free)"),
    "pose_trans_l2": ("info", "mean ‖Δ t_xy‖ generated vs ground truth"),
    "pose_std_deg": ("≈gt", "diversity: temporal std of head angles (deg)"),
    "pose_std_deg_gt": ("ref", "same for ground truth"),
    "exp_std": ("≈gt", "diversity: temporal std of expression"),
    "exp_std_gt": ("ref", "same for ground truth"),
    "exp_velocity": ("≈gt", "jitter: mean ‖Δexp‖ per frame"),
    "exp_acceleration": ("≈gt", "jitter: mean ‖Δ²exp‖ per frame"),
    "exp_acceleration_gt": ("ref", "same for ground truth"),
    "pose_velocity": ("≈gt", "mean ‖Δangles‖ per frame (deg)"),
    "pose_acceleration": ("≈gt", "mean ‖Δ²angles‖ per frame (deg)"),
    "pose_velocity_ratio": ("→1", "temporal realism: pose velocity, generated / ground truth (> 1 faster)"),
    "pose_acceleration_ratio": ("→1", "temporal realism: pose acceleration, generated / ground truth (> 1 jerkier)"),
    "exp_velocity_ratio": ("→1", "temporal realism: expression velocity, generated / ground truth"),
    "exp_acceleration_ratio": ("→1", "temporal realism: expression acceleration, generated / ground truth"),
    "fid": ("↓", "FID, generated vs ground-truth frames"),
    "fvd": ("↓", "FVD (I3D), generated vs ground-truth clips"),
    "sync_c": ("↑", "Sync-C (SyncNet confidence), generated"),
    "sync_c_gt": ("ref", "Sync-C of the ground-truth video"),
    "sync_d": ("↓", "Sync-D (SyncNet min distance), generated"),
    "sync_d_gt": ("ref", "Sync-D of the ground-truth video"),
    "sync_offset_abs": ("→0", "|AV offset| (frames), generated"),
    "csim": ("↑", "identity cosine (ArcFace), source frame vs generated frames"),
    "psnr": ("↑", "PSNR generated vs ground-truth frame (same time)"),
    "ssim": ("↑", "SSIM generated vs ground-truth frame (same time)"),
    "lpips": ("↓", "LPIPS generated vs ground-truth frame (same time)"),
    "num_clips": ("n", "clips in the motion statistics"),
    "sync_num_videos": ("n", "videos scored by SyncNet"),
    "sync_skipped": ("n", "videos too short for SyncNet"),
}
PLOT_KEYS = ("mouth_audio_r", "fid", "fvd", "sync_c", "sync_d", "csim", "exp_acceleration", "pose_std_deg")


@dataclass
class CheckpointResult:
    """One evaluated checkpoint."""

    label: str  # checkpoint path as given
    global_step: int | None
    result: EvalResult


# ------------------------------------------------------------------------------------------------
# Pictures
# ------------------------------------------------------------------------------------------------


def keypoint_frames(gen: torch.Tensor, gt: torch.Tensor, kp: torch.Tensor, size: int = 256,
                    indices: Sequence[int] | None = None, lips: Sequence[int] | None = None) -> np.ndarray:
    """Raw motion (T, 70) generated and ground truth + x_c (21, 3) → uint8 (N, size, 2·size, 3):
    the 21 driving keypoints (x, y) drawn side by side, generated left (blue), ground truth right (green),
    lips (the configured lip_keypoints) red, both in the same frame fitted to the ground truth."""
    from PIL import Image, ImageDraw

    from models.motion import LOWER_LIP_KP, UPPER_LIP_KP, transform_keypoints

    lips = (UPPER_LIP_KP, LOWER_LIP_KP) if lips is None else tuple(lips)
    idx = list(range(gen.shape[0])) if indices is None else list(indices)
    pts = [transform_keypoints(kp.float(), m[idx].float())[..., :2].numpy() for m in (gen, gt)]  # 2 × (N, 21, 2)
    ref = pts[1].reshape(-1, 2)  # framed on the ground truth: generated points far off it leave the panel
    lo, hi = ref.min(0), ref.max(0)
    scale = 0.8 * size / max(float((hi - lo).max()), 1e-6)
    centre = (lo + hi) / 2
    out = np.zeros((len(idx), size, 2 * size, 3), np.uint8)
    for i in range(len(idx)):
        for panel, (p, colour, name) in enumerate(zip(pts, ((40, 90, 200), (30, 150, 60)),
                                                      ("generated", "ground truth"))):
            img = Image.new("RGB", (size, size), (250, 250, 250))  # one image per panel: points off it are clipped
            d = ImageDraw.Draw(img)
            xy = (p[i] - centre) * scale + size / 2  # y grows downwards, as in the image (lower lip below upper)
            for k, (x, y) in enumerate(xy):
                r = 4 if k in lips else 2.5
                d.ellipse([x - r, y - r, x + r, y + r], fill=(220, 40, 40) if r == 4 else colour)
            d.text((6, 4), f"{name}  t={idx[i]}", fill=(60, 60, 60))
            d.line([(0, 0), (0, size)], fill=(180, 180, 180))
            out[i, :, panel * size : (panel + 1) * size] = np.asarray(img)
    return out


def frame_strip(sample: dict[str, Any], n: int = 6) -> np.ndarray:
    """uint8 image: n evenly spaced times; rendered frames (generated row over ground-truth row)
    when the clip was rendered, else drawn keypoints (generated | ground truth per time)."""
    t = int(sample["gen_frames"].shape[0] if "gen_frames" in sample else sample["gen_motion"].shape[0])
    idx = np.unique(np.linspace(0, t - 1, min(n, t)).round().astype(int)).tolist()
    if "gen_frames" in sample:
        rows = [torch.cat(list(sample[k][idx]), dim=-1).permute(1, 2, 0).numpy() for k in ("gen_frames", "gt_frames")]
        return np.concatenate(rows, axis=0)  # (2H, n·W, 3)
    panels = keypoint_frames(sample["gen_motion"], sample["gt_motion"], sample["kp"], size=160, indices=idx,
                             lips=sample.get("lips"))
    gen_row = np.concatenate([p[:, :160] for p in panels], axis=1)
    gt_row = np.concatenate([p[:, 160:] for p in panels], axis=1)
    return np.concatenate([gen_row, gt_row], axis=0)  # (2·160, n·160, 3)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def metric_vs_step_plot(results: Sequence[CheckpointResult]) -> bytes | None:
    """PNG of each headline metric vs global step (None unless ≥ 2 checkpoints with steps)."""
    pts = sorted((r for r in results if r.global_step is not None), key=lambda r: r.global_step)
    if len(pts) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in PLOT_KEYS if any(k in r.result.scalars for r in pts)]
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        xs = [r.global_step for r in pts if key in r.result.scalars]
        ax.plot(xs, [r.result.scalars[key] for r in pts if key in r.result.scalars], "o-", label="generated")
        gt = f"{key}_gt"
        if any(gt in r.result.scalars for r in pts):
            ax.plot(xs, [r.result.scalars.get(gt, float("nan")) for r in pts if key in r.result.scalars], "--",
                    color="gray", label="ground truth")
            ax.legend(fontsize=7)
        ax.set_title(f"{key} ({describe(key)[0]})", fontsize=9)
        ax.set_xlabel("global step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    return _figure_png(fig)


def per_clip_plot(result: EvalResult) -> bytes | None:
    """PNG bar chart of mouth/audio r per clip, generated vs ground truth."""
    rows = [r for r in result.per_clip if "mouth_audio_r" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(rows) + 1.5), 3.0))
    ax.bar(x - 0.2, [r["mouth_audio_r"] for r in rows], 0.4, label="generated")
    ax.bar(x + 0.2, [r["mouth_audio_r_gt"] for r in rows], 0.4, label="ground truth", color="gray")
    ax.set_xticks(x, [r["key"] if len(r["key"]) <= 24 else "…" + r["key"][-23:] for r in rows],
                  rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("mouth/audio r")
    ax.axhline(0, color="black", lw=0.5)
    ax.legend(fontsize=7)
    return _figure_png(fig)


# ------------------------------------------------------------------------------------------------
# Blocks → Markdown / HTML
# ------------------------------------------------------------------------------------------------


def describe(key: str) -> tuple[str, str]:
    """(direction, meaning) of a scalar name; *_gt / *_std / sync_* variants derive from their base."""
    if key in DESCRIPTIONS:
        return DESCRIPTIONS[key]
    for suffix, (direction, text) in (("_gt", ("ref", "ground truth: {}")),
                                      ("_std", ("info", "std over videos of: {}"))):
        if key.endswith(suffix):
            base = describe(key[: -len(suffix)])
            return direction, text.format(base[1].replace(", generated", "")) if base[1] else ""
    return "", ""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    esc = lambda s: _fmt(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(_fmt(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(blocks: list[tuple], out_dir: Path) -> tuple[str, str]:
    """Blocks → (markdown, html). Image blocks ("image", name, png bytes, caption) are written as files for the md."""
    md, body = [], []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            md.append("#" * b[1] + " " + b[2])
            body.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
        elif kind == "p":
            md.append(b[1])
            body.append(f"<p>{html.escape(b[1])}</p>")
        elif kind == "warn":
            md.append(f"> **{b[1]}**")
            body.append(f"<p class='warn'>{html.escape(b[1])}</p>")
        elif kind == "table":
            md.append(_md_table(b[1], b[2]))
            body.append(_html_table(b[1], b[2]))
        elif kind == "image":
            (out_dir / b[1]).write_bytes(b[2])
            md.append(f"![{b[3]}]({b[1]})\n\n*{b[3]}*")
            data = base64.b64encode(b[2]).decode()
            body.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(b[3])}'>"
                        f"<figcaption>{html.escape(b[3])}</figcaption></figure>")
        elif kind == "video":  # ("video", name, mp4 bytes, caption): a file beside the md, embedded in the html
            (out_dir / b[1]).write_bytes(b[2])
            md.append(f"[▶ {b[3]}]({b[1]})")
            data = base64.b64encode(b[2]).decode()
            body.append(f"<figure><video controls preload='metadata' src='data:video/mp4;base64,{data}'></video>"
                        f"<figcaption>{html.escape(b[3])} (<a href='{html.escape(b[1])}'>{html.escape(b[1])}</a>)"
                        "</figcaption></figure>")
        elif kind == "code":
            md.append("```\n" + b[1] + "\n```")
            body.append(f"<pre>{html.escape(b[1])}</pre>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}"
             "th{background:#f0f0f0}.warn{background:#fee;border:2px solid #c00;padding:.6em;font-weight:bold}"
             "img,video{max-width:100%}pre{background:#f6f6f6;padding:.6em;font-size:12px;overflow-x:auto}")
    title = html.escape(blocks[0][2]) if blocks and blocks[0][0] == "h" else "Evaluation"
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head>"
            f"<body>{''.join(body)}</body></html>")
    return "\n\n".join(md) + "\n", page


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------


def _weights_rows(protocol: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, p in protocol["metrics"].items():
        w = p.get("weights") or p.get("backbone")
        if not w:
            continue
        if w.get("note") and not w.get("sha256"):
            rows.append([name, p.get("network", p.get("metric", "")), "—", w["note"]])
        else:
            rows.append([name, p.get("network", p.get("metric", "")), w.get("path", ""), w.get("sha256", "")])
    face = protocol.get("face_model", {})
    for f, sha in face.get("files", {}).items():
        rows.append(["renderer", f"LivePortrait ({face.get('preset')})", f"{face.get('dir')}/{f}", sha])
    return rows


def _protocol_blocks(protocol: dict[str, Any]) -> list[tuple]:
    s = protocol["settings"]
    blocks: list[tuple] = [("h", 2, "Protocol")]
    if protocol["random_weights"]:
        blocks.append(("warn", f"RANDOM WEIGHTS: {', '.join(protocol['random_weights'])} used deterministic "
                               "random-weight networks. Their numbers only test the pipeline; "
                               "they are not comparable to anything."))
    lips = protocol.get("lip_keypoints", {})
    blocks += [
        ("table", ["item", "value"], [
            ["protocol", f"{protocol.get('name', 'custom')} (--protocol; hdtf = the settings of published HDTF "
                         "tables, see below)"],
            ["clips", protocol["clips"]],
            ["generated frames (25 fps)", protocol["generated_frames"]],
            ["rendered clips / frames", f"{protocol['rendered_clips']} / {protocol['rendered_frames']}"],
            ["clips too short for FVD", protocol["fvd_skipped_clips"]],
            ["generation", protocol["generation"]],
            ["renderer", "not configured (motion-only evaluation)" if not protocol["face_model"].get("configured")
             else f"{protocol['face_model']['dir']} ({protocol['face_model']['output']})"],
            ["eval resolution", f"{s['eval_size']}x{s['eval_size']}"],
            ["lip keypoints (mouth opening)", f"upper {lips.get('upper')}, lower {lips.get('lower')} "
                                              "(lip_keypoints; check with `playmate shards lips DIR`)"],
        ]),
        ("h", 3, "Published HDTF tables vs this run"),
        ("table", ["item", "published tables", "this run"], protocol_rows(protocol)),
        ("h", 3, "Weights files"),
        ("table", ["metric", "network", "file", "sha256 / note"],
         _weights_rows(protocol) or [["—", "no feature networks", "", ""]]),
        ("h", 3, "Crops and resolutions"),
        ("table", ["metric", "input"], [[k, v] for k, v in protocol["resolutions"].items()]),
    ]
    if "fvd" in protocol["metrics"]:
        fvd = protocol["metrics"]["fvd"]
        blocks += [("h", 3, "FVD variant"),
                   ("table", ["knob", "value"], [[k, v] for k, v in fvd.items() if k != "weights"])]
    if protocol["skipped"]:
        blocks += [("h", 3, "Not computed"),
                   ("table", ["metric", "reason"], [[k, v] for k, v in protocol["skipped"].items()])]
    details = {k: v for k, v in protocol["metrics"].items()}
    blocks += [("h", 3, "Every metric's protocol()"), ("code", json.dumps(details, indent=1, default=str)),
               ("h", 3, "Settings (EvaluationConfig)"), ("code", json.dumps(s, indent=1, default=str))]
    return blocks


def short_labels(labels: Sequence[str]) -> list[str]:
    """The shortest path tails that tell the checkpoints apart: last.ckpt, or stage1/checkpoints/last.ckpt."""
    parts = [Path(label).parts or (label,) for label in labels]
    for k in range(1, max(len(p) for p in parts) + 1):
        tails = [str(Path(*p[-k:])) for p in parts]
        if len(set(tails)) == len(tails):
            return tails
    return [str(label) for label in labels]


def report_blocks(results: Sequence[CheckpointResult], data: Sequence[str],
                  skipped_clips: Sequence[Any] = ()) -> list[tuple]:
    """The whole report as blocks (title first). skipped_clips: `datamodules.clips.SkippedClip`s."""
    random = any(r.result.random_weights for r in results)
    title = RANDOM_TITLE if random else "Playmate evaluation"
    blocks: list[tuple] = [("h", 1, title)]
    if random:
        blocks.append(("warn", "Some feature networks have random weights (see Protocol): every network-based number "
                               "below only exercises the pipeline. Motion statistics (no network) are real."))
    blocks.append(("p", f"Made by `playmate evaluate` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
                        f"data: {', '.join(map(str, data))}; checkpoints: {len(results)}."))
    if skipped_clips:
        blocks.append(("warn", f"{len(skipped_clips)} sample(s) or shard(s) of the data were skipped while loading "
                               "the clips (listed under Protocol); the numbers cover the clips that loaded."))
    keys = [k for k in DESCRIPTIONS if any(k in r.result.scalars for r in results)]
    keys += sorted({k for r in results for k in r.result.scalars} - set(keys))
    names = short_labels([r.label for r in results])
    columns = [f"{n} (step {r.global_step})" for n, r in zip(names, results)]
    header = ["metric", "dir.", *columns, "meaning"]
    rows = [[k, describe(k)[0]] + [r.result.scalars.get(k) for r in results] + [describe(k)[1]] for k in keys]
    comp = None if random else comparison(results[-1].result.protocol, results[-1].result.scalars)
    if comp:  # beside each metric with a published number: that number, our sample count, comparable or not
        header[-1:-1] = [f"published ({SOURCE})", "samples", "comparable"]
        extra = {k: [c["published"], c["samples"], c["comparable"]] for k, c in comp.items()}
        rows = [row[:-1] + extra.get(row[0], ["", "", ""]) + row[-1:] for row in rows]
    blocks += [("h", 2, "Results"), ("p", "dir.: ↑ higher is better, ↓ lower is better, ≈gt close to the ground-truth "
                                          "value, ref = ground-truth reference, n = count."), ("table", header, rows)]
    step_png = metric_vs_step_plot(results)
    if step_png:
        blocks += [("h", 2, "Metrics vs training step"),
                   ("image", "metric_vs_step.png", step_png, "headline metrics vs global step")]
    last = results[-1]
    blocks += temporal_blocks(last.result)
    blocks += video_blocks(last.result)
    blocks.append(("h", 2, f"Per clip ({names[-1]})"))
    cols = sorted({k for row in last.result.per_clip for k in row}, key=lambda k: (k != "key", k))
    blocks.append(("table", cols, [[row.get(c) for c in cols] for row in last.result.per_clip]))
    clip_png = per_clip_plot(last.result)
    if clip_png:
        blocks.append(("image", "per_clip_mouth_audio_r.png", clip_png, "mouth/audio correlation per clip"))
    if last.result.samples:
        blocks.append(("h", 2, "Frame strips: generated (top) vs ground truth (bottom)"))
        for s in last.result.samples:
            kind = ("rendered frames" if "gen_frames" in s
                    else "driving keypoints (motion-only: no renderer configured; lips red)")
            blocks.append(("image", f"strip_{s['key']}.png", _png(frame_strip(s)),
                           f"{s['key']}: {kind}, evenly spaced times"))
    blocks += _protocol_blocks(last.result.protocol)
    if skipped_clips:
        blocks += [("h", 3, "Skipped while loading the clips"),
                   ("table", ["shard", "key", "reason"], [[c.shard, c.key, c.reason] for c in skipped_clips])]
    return blocks


def temporal_blocks(result: EvalResult) -> list[tuple]:
    """Temporal realism: the explanation, generated vs ground truth per statistic with the ratio, and
    the first sample clip's pose angles and mouth opening over time."""
    from metrics.temporal import EXPLANATION, STATS
    from pl_modules.evaluation.media import motion_plot

    sc = result.scalars
    rows = [[k, sc.get(k), sc.get(f"{k}_gt"), sc.get(f"{k}_ratio")] for k in STATS if f"{k}_ratio" in sc]
    if not rows:
        return []
    blocks: list[tuple] = [("h", 2, "Temporal realism"), ("p", EXPLANATION),
                           ("table", ["statistic (mean per frame)", "generated", "ground truth", "ratio"], rows)]
    if result.samples:
        s = result.samples[0]
        png = _png(motion_plot(s["gen_motion"], s["gt_motion"], s["kp"], s["key"]))
        blocks.append(("image", f"motion_{s['key']}.png", png,
                       f"{s['key']}: head pose (pitch, yaw, roll) and mouth opening over time, generated vs ground "
                       "truth"))
    return blocks


def video_blocks(result: EvalResult) -> list[tuple]:
    """One video per sample clip with its audio: generated | ground truth (rendered, or drawn by the
    synthetic-world renderer when no face model is configured)."""
    import tempfile

    from pl_modules.evaluation.media import sample_video

    if not result.samples:
        return []
    blocks: list[tuple] = [("h", 2, "Videos: generated | ground truth, with audio")]
    with tempfile.TemporaryDirectory() as tmp:
        for s in result.samples:
            data = sample_video(s, Path(tmp) / "v.mp4").read_bytes()
            kind = "rendered frames" if "gen_frames" in s else "synthetic-world renderer (no face model configured)"
            blocks.append(("video", f"video_{s['key']}.mp4", data, f"{s['key']}: {kind}"))
    return blocks


def write_report(results: Sequence[CheckpointResult], out_dir: str | Path, data: Sequence[str],
                 skipped_clips: Sequence[Any] = ()) -> Path:
    """Write report.md, report.html, metrics.json (and the md's PNGs) to out_dir; returns report.md.
    skipped_clips: what loading the clips left out (`datamodules.clips.SkippedClip`), listed in all three."""
    if not results:
        raise ValueError("write_report needs at least one evaluated checkpoint")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, page = render(report_blocks(results, data, skipped_clips), out)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(page)
    random = any(r.result.random_weights for r in results)
    payload = {
        "title": RANDOM_TITLE if random else "Playmate evaluation",
        "random_weights": random,
        "data": [str(d) for d in data],
        "skipped_clips": [{"shard": c.shard, "key": c.key, "reason": c.reason} for c in skipped_clips],
        "protocol": results[-1].result.protocol.get("name", "custom"),
        "checkpoints": [{"checkpoint": r.label, "global_step": r.global_step, "scalars": r.result.scalars,
                         "comparison": None if random else comparison(r.result.protocol, r.result.scalars),
                         "per_clip": r.result.per_clip, "protocol": r.result.protocol} for r in results],
    }
    (out / "metrics.json").write_text(json.dumps(payload, indent=1, default=str, allow_nan=True))
    return out / "report.md"
