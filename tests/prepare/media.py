"""Small synthetic raw videos written with PyAV (no ffmpeg binary needed) for the prepare tests."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def face_frames(n: int, size: int = 128, seed: int = 0, cut_at: int | None = None) -> np.ndarray:
    """uint8 (n, size, size, 3): a bright moving ellipse ('face') on a gradient; colours flip at `cut_at`."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = np.stack([xx / size * 120, yy / size * 120, np.full_like(xx, 60)], -1)
    out = np.empty((n, size, size, 3), np.uint8)
    for k in range(n):
        cx = size / 2 + 4 * np.sin(k / 7)
        cy = size / 2 + 3 * np.cos(k / 9)
        mask = ((xx - cx) / (size * 0.2)) ** 2 + ((yy - cy) / (size * 0.26)) ** 2 < 1
        img = base.copy()
        img[mask] = (220, 180, 150)
        if cut_at is not None and k >= cut_at:
            img = 255 - img
        out[k] = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
    return out


def speech_audio(seconds: float, rate: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """float32 (channels, S): 0.4 s tone bursts separated by 0.3 s of silence."""
    t = np.arange(int(seconds * rate)) / rate
    on = (t % 0.7) < 0.4
    x = 0.3 * np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 0.5 * t)) * t) * on
    return np.stack([x * (1 - 0.2 * c) for c in range(channels)]).astype(np.float32)


def write_video(
    path: Path, seconds: float = 4.0, fps: int = 30, rate: int | None = 44100, size: int = 128,
    audio_seconds: float | None = None, pts: np.ndarray | None = None, cut_at_s: float | None = None, seed: int = 0,
    frames: np.ndarray | None = None,
) -> Path:
    """H.264 mp4 (+ AAC stereo at `rate` unless None). `pts` (seconds per frame) makes a VFR file; `frames`
    (n, H, W, 3) replaces the default moving ellipse (then seconds = n / fps)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(pts) if pts is not None else int(round(seconds * fps))
    if frames is None:
        frames = face_frames(n, size, seed, None if cut_at_s is None else int(cut_at_s * fps))
    with av.open(str(path), "w", format="mp4") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.height, vs.width = frames.shape[1:3]
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "ultrafast", "threads": "1"}
        if pts is not None:
            vs.codec_context.time_base = Fraction(1, 1000)
        a = None
        if rate is not None:
            a = c.add_stream("aac", rate=rate)
            a.layout = "stereo"
        for k, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            if pts is not None:
                vf.pts = int(round(pts[k] * 1000))
                vf.time_base = Fraction(1, 1000)
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if a is not None:
            x = speech_audio(audio_seconds if audio_seconds is not None else seconds, rate, 2, seed)
            af = av.AudioFrame.from_ndarray(x, format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = rate, 0, Fraction(1, rate)
            for p in a.encode(af):
                c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


def write_corrupt(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    return path


def write_truncated(path: Path, src: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def vfr_times(seconds: float) -> np.ndarray:
    """Frame times alternating 20 ms and 50 ms apart (a strongly variable frame rate)."""
    t, out, k = 0.0, [], 0
    while t < seconds:
        out.append(t)
        t += 0.02 if k % 2 == 0 else 0.05
        k += 1
    return np.asarray(out)


def build_mead(root: Path) -> dict[str, str]:
    """MEAD tree: 2 actors × (angry l1, happy l3, neutral l1) at 30 fps / 44.1 kHz, + a corrupt file, a silent video.

    Returns {item_id: expected outcome ('emotion:intensity' or rejection reason)}.
    """
    expect = {}
    for ai, actor in enumerate(("M003", "W011")):
        for ei, (emo, lvl) in enumerate((("angry", 1), ("happy", 3), ("neutral", 1))):
            p = root / actor / "video" / "front" / emo / f"level_{lvl}" / "001.mp4"
            write_video(p, seconds=3.6, seed=10 * ai + ei)
            expect[f"{actor}_front_{emo}_l{lvl}_001"] = f"{emo}:{lvl}"
    write_corrupt(root / "M003" / "video" / "front" / "sad" / "level_2" / "002.mp4")
    expect["M003_front_sad_l2_002"] = "corrupt_video"
    write_video(root / "W011" / "video" / "front" / "surprised" / "level_2" / "003.mp4", seconds=3.6, rate=None)
    expect["W011_front_surprised_l2_003"] = "no_audio"
    write_video(root / "W011" / "video" / "left_30" / "angry" / "level_1" / "001.mp4", seconds=3.6)  # other view
    return expect


FACE_A = (230, 170, 140)  # the moving speaker
FACE_B = (70, 200, 80)  # a second face


def draw_faces(n: int, faces: list[tuple[tuple[int, int, int], object]], size: tuple[int, int] = (128, 192),
               seed: int = 0) -> np.ndarray:
    """uint8 (n, H, W, 3): ellipses ('faces', semi-axes 14 × 18) of the given colours on a dark gradient.

    faces: (colour, centre(k) → (x, y) or None when absent at frame k).
    """
    h, w = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w * 60, yy / h * 60, np.full_like(xx, 40)], -1)
    out = np.empty((n, h, w, 3), np.uint8)
    for k in range(n):
        img = base.copy()
        for colour, centre in faces:
            c = centre(k)
            if c is not None:
                img[((xx - c[0]) / 14) ** 2 + ((yy - c[1]) / 18) ** 2 < 1] = colour
        out[k] = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
    return out


class ColourFaceDetector:
    """A deterministic stand-in for S3FD (its `detect_faces` interface): one box per face colour found.

    A face is the bounding box of the pixels within `tol` of a colour (at least `min_pixels` of them),
    score 0.99; frames are counted in `calls`.
    """

    def __init__(self, colours=(FACE_A, FACE_B), tol: int = 40, min_pixels: int = 40) -> None:
        self.colours, self.tol, self.min_pixels, self.calls = colours, tol, min_pixels, 0

    def detect_faces(self, image: np.ndarray, conf_th: float = 0.9, scales=(0.25,)) -> np.ndarray:
        self.calls += 1
        rows = []
        for colour in self.colours:
            m = (np.abs(image.astype(np.int16) - np.asarray(colour, np.int16)) < self.tol).all(-1)
            if m.sum() >= self.min_pixels:
                ys, xs = np.nonzero(m)
                rows.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.99])
        return np.asarray(rows, np.float64).reshape(-1, 5)
