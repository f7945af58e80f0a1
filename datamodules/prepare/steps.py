"""The per-clip steps of data preparation, each a plain function with its own test.

    probe → decode audio, resample to 16 kHz mono → plan the 25 fps timeline → select video frames by
    nearest timestamp (decord; PyAV fallback) → split at scene cuts / silences → face box → 256² crop
    → [main process, GPU] SyncNet filter + offset correction → motion → yaw filter → exact alignment

A step that finds bad input raises `Rejected(reason, detail)`; the pipeline records the reason in
the ledger and moves on. Nothing is ever padded: every length mismatch is a rejection or an
`AlignmentError`.

Time convention: all times are stream seconds (pts · time_base). Output frame k of an item is the
source frame whose timestamp is nearest to t0 + k/25; its audio is samples [k·640, (k+1)·640) of
the 16 kHz track starting at t0.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from datamodules.prepare.adapters import RawItem

# Rejection reasons (ledger and summary keys).
CORRUPT = "corrupt_video"
NO_AUDIO = "no_audio"
CORRUPT_AUDIO = "corrupt_audio"
VFR = "variable_frame_rate"
AUDIO_SHORT = "audio_shorter_than_video"
TOO_SHORT = "too_short"
FACE_SMALL = "face_too_small"
NO_ANNOTATION = "no_face_annotation"
GAPS = "detection_gaps"
YAW = "yaw_too_large"
SYNC_CONF = "sync_low_confidence"
SYNC_OFFSET = "sync_offset_too_large"
CROP_SIZE = 256


class Rejected(Exception):
    """Bad input for one item or clip: recorded with its reason, never crashes the run."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class AlignmentError(RuntimeError):
    """Frames, motion and audio of a clip disagree in length (a bug upstream: the clip is never written)."""


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, ValueError, OSError, EOFError)


# ------------------------------------------------------------------------------------------------
# Probe
# ------------------------------------------------------------------------------------------------


@dataclass
class Probe:
    """What the container says, from demuxing only (no decode)."""

    width: int
    height: int
    frame_times: np.ndarray  # (N,) sorted presentation times of the video frames, seconds
    interval: float  # median frame interval, seconds
    vfr_deviation: float  # max |Δt − median| / median over consecutive frames
    has_audio: bool

    @property
    def fps(self) -> float:
        return 1.0 / self.interval

    @property
    def end(self) -> float:
        return float(self.frame_times[-1]) + self.interval


def probe(path: str | Path) -> Probe:
    """Open and demux the video stream: frame times, size, VFR deviation, audio presence."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise Rejected(CORRUPT, f"{path}: no video stream")
            vs = c.streams.video[0]
            w, h = vs.codec_context.width, vs.codec_context.height
            has_audio = bool(c.streams.audio)
            times = sorted(float(p.pts * p.time_base) for p in c.demux(vs) if p.pts is not None and p.size > 0)
    except Rejected:
        raise
    except _av_errors() as e:
        raise Rejected(CORRUPT, f"{path}: cannot demux ({type(e).__name__}: {e})") from None
    if len(times) < 2 or not w or not h:
        raise Rejected(CORRUPT, f"{path}: {len(times)} video frames of size {w}x{h}")
    t = np.asarray(times)
    d = np.diff(t)
    med = float(np.median(d))
    if med <= 0:
        raise Rejected(CORRUPT, f"{path}: duplicate frame timestamps")
    dev = float(np.abs(d - med).max() / med)
    return Probe(width=w, height=h, frame_times=t, interval=med, vfr_deviation=dev, has_audio=has_audio)


# ------------------------------------------------------------------------------------------------
# Audio
# ------------------------------------------------------------------------------------------------


def decode_audio(path: str | Path) -> tuple[np.ndarray, int, float]:
    """First audio stream → (float32 mono samples in [-1, 1], sample rate, start time in seconds).

    Channels are averaged by FFmpeg's resampler (format/layout conversion only; the rate is kept:
    rate conversion is `resample_audio`'s polyphase filter).
    """
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise Rejected(NO_AUDIO, f"{path}: no audio stream")
            s = c.streams.audio[0]
            rate = s.codec_context.sample_rate
            res = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks, start = [], None
            for frame in c.decode(s):
                if start is None:
                    start = float(frame.time) if frame.time is not None else 0.0
                for out in res.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in res.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except Rejected:
        raise
    except _av_errors() as e:
        raise Rejected(CORRUPT_AUDIO, f"{path}: cannot decode audio ({type(e).__name__}: {e})") from None
    x = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if x.size == 0 or not rate:
        raise Rejected(NO_AUDIO, f"{path}: the audio stream has no samples")
    return x, int(rate), start or 0.0


def resample_audio(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """float mono (S,) at `rate` → float32 at `target` by polyphase filtering (scipy.signal.resample_poly)."""
    from scipy.signal import resample_poly

    if rate == target:
        return x.astype(np.float32)
    g = gcd(int(rate), int(target))
    return resample_poly(x.astype(np.float64), target // g, rate // g).astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------------------------------------
# Timeline: the common 25 fps / 16 kHz span of video and audio
# ------------------------------------------------------------------------------------------------


@dataclass
class Timeline:
    t0: float  # stream time of output frame 0
    num_frames: int  # T
    audio_offset: int  # index of t0 in the 16 kHz track


def plan_timeline(
    pr: Probe, audio_start: float, audio16: np.ndarray, start_s: float = 0.0, end_s: float | None = None,
    tolerance_s: float = 0.1,
) -> Timeline:
    """T = ⌊common duration · 25⌋ and the audio offset; reject when audio ends > tolerance before the video."""
    a_end = audio_start + audio16.size / SAMPLE_RATE
    v_stop = min(pr.end, end_s) if end_s is not None else pr.end
    if a_end < v_stop - tolerance_s:
        raise Rejected(AUDIO_SHORT, f"audio ends at {a_end:.3f} s but video at {v_stop:.3f} s "
                                    f"(tolerance filters.audio_tolerance_s={tolerance_s})")
    t0 = max(float(pr.frame_times[0]), audio_start, start_s)
    stop = min(v_stop, a_end)
    offset = int(round((t0 - audio_start) * SAMPLE_RATE))
    t = int(math.floor((stop - t0) * FPS + 1e-6))
    t = max(0, min(t, (audio16.size - offset) // SAMPLES_PER_FRAME))  # never more frames than whole audio frames
    return Timeline(t0=t0, num_frames=t, audio_offset=offset)


def select_frames(source_times: np.ndarray, t0: float, num_frames: int, fps: int = FPS) -> np.ndarray:
    """Index of the source frame nearest to t0 + k/fps for each output frame k (ties → earlier frame)."""
    targets = t0 + np.arange(num_frames) / fps
    j = np.clip(np.searchsorted(source_times, targets), 1, len(source_times) - 1)
    left, right = source_times[j - 1], source_times[j]
    return np.where(targets - left <= right - targets, j - 1, j).astype(np.int64)


# ------------------------------------------------------------------------------------------------
# Video decode (decord; PyAV fallback) of selected frames, downscaled in the decoder
# ------------------------------------------------------------------------------------------------


def decode_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    s = min(1.0, max_side / max(width, height))
    return max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)


class FrameReader:
    """Reads frames by (ascending) index as uint8 RGB (n, h, w, 3) at the decode size."""

    def __init__(self, path: str | Path, pr: Probe, max_side: int, backend: str = "decord") -> None:
        self.path, self.n = str(path), len(pr.frame_times)
        self.size = decode_size(pr.width, pr.height, max_side)  # (w, h)
        self.scale = (self.size[0] / pr.width, self.size[1] / pr.height)
        self.backend = backend
        self._vr = None
        self._pyav = None
        self._dpos, self._last = 0, None
        if backend == "decord":
            try:
                import decord
            except ImportError:
                self.backend = "pyav"
            else:
                try:
                    self._vr = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=1,
                                                  width=self.size[0], height=self.size[1])
                except Exception as e:  # decord raises its own DECORDError (a RuntimeError) on bad input
                    raise Rejected(CORRUPT, f"{path}: decord cannot open ({type(e).__name__}: {e})") from None
                if len(self._vr) != self.n:
                    self._vr = None
                    self.backend = "pyav"  # frame count differs from the container's: index by PyAV instead

    def read(self, indices: np.ndarray) -> np.ndarray:
        if len(indices) == 0:
            return np.zeros((0, self.size[1], self.size[0], 3), np.uint8)
        if self._vr is not None:
            return self._read_decord(indices)
        return self._read_pyav(indices)

    def _read_decord(self, indices: np.ndarray) -> np.ndarray:
        """Sequential next()/skip_frames(): get_batch on skipping indices seeks from the last keyframe and
        was 3-4x slower than a sequential read for 30 → 25 fps selection (benchmarks/bench_prepare.py)."""
        out = []
        try:
            for i in indices.tolist():
                if i == self._dpos - 1 and self._last is not None:  # repeated frame (upsampling)
                    out.append(self._last)
                    continue
                if i < self._dpos:
                    raise RuntimeError(f"frame indices must ascend across reads, got {i} after {self._dpos - 1}")
                if i > self._dpos:
                    self._vr.skip_frames(i - self._dpos)
                self._last = self._vr.next().asnumpy()
                self._dpos = i + 1
                out.append(self._last)
        except RuntimeError:
            raise
        except Exception as e:  # DECORDError / StopIteration on damaged or short data
            raise Rejected(CORRUPT, f"{self.path}: decord failed at frame {self._dpos} ({type(e).__name__}: {e})") from None
        return np.stack(out)

    def _read_pyav(self, indices: np.ndarray) -> np.ndarray:
        """Sequential decode; a generator persists across calls so chunks continue where the last stopped."""
        if self._pyav is None:
            self._pyav = self._decode_iter()
            self._cur = (-1, None)
        out = []
        for i in indices.tolist():
            while self._cur[0] < i:
                try:
                    self._cur = next(self._pyav)
                except StopIteration:
                    raise Rejected(CORRUPT, f"{self.path}: decoding stopped at frame {self._cur[0] + 1} of {self.n}") from None
            if self._cur[0] != i:
                raise RuntimeError(f"frame indices must ascend across reads, got {i} after {self._cur[0]}")
            out.append(self._cur[1])
        return np.stack(out)

    def _decode_iter(self) -> Iterator[tuple[int, np.ndarray]]:
        import av

        w, h = self.size
        try:
            with av.open(self.path) as c:
                stream = c.streams.video[0]
                stream.thread_type = "AUTO"
                stream.codec_context.thread_count = 1
                for i, frame in enumerate(c.decode(stream)):
                    yield i, frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
        except _av_errors() as e:
            raise Rejected(CORRUPT, f"{self.path}: cannot decode ({type(e).__name__}: {e})") from None


# ------------------------------------------------------------------------------------------------
# Clip splitting: scene cuts, then silences inside over-long segments
# ------------------------------------------------------------------------------------------------


def thumbnails(frames: np.ndarray, size: int = 32) -> np.ndarray:
    """uint8 (n, h, w, 3) → float32 grey (n, size, size) in 0..255 (area average)."""
    import torch
    import torch.nn.functional as F

    h, w = frames.shape[1:3]
    sub = frames[:, :: max(1, h // (2 * size)), :: max(1, w // (2 * size))]  # (n, ≥2·size, ≥2·size, 3) strided
    x = torch.from_numpy(np.ascontiguousarray(sub)).float().mean(-1)[:, None]  # (n, 1, h', w')
    return F.adaptive_avg_pool2d(x, size)[:, 0].numpy()  # (n, size, size)


def scene_cuts(thumbs: np.ndarray, threshold: float) -> list[int]:
    """Frame indices k where a new shot starts (mean |grey_k − grey_{k−1}| > threshold)."""
    if len(thumbs) < 2:
        return []
    d = np.abs(np.diff(thumbs, axis=0)).mean(axis=(1, 2))  # (n-1,)
    return (np.nonzero(d > threshold)[0] + 1).tolist()


def silent_frames(wav: np.ndarray, silence_db: float) -> np.ndarray:
    """float (n·640,) → bool (n,): frame RMS below `silence_db` dBFS."""
    x = wav[: wav.size // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME].reshape(-1, SAMPLES_PER_FRAME).astype(np.float64)
    rms = np.sqrt((x**2).mean(axis=1))
    return 20 * np.log10(rms + 1e-10) < silence_db


def _silence_runs(silent: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    runs, start = [], None
    for k, s in enumerate([*silent.tolist(), False]):
        if s and start is None:
            start = k
        elif not s and start is not None:
            if k - start >= min_len:
                runs.append((start, k))
            start = None
    return runs


def split_segments(
    thumbs: np.ndarray, wav: np.ndarray, min_frames: int, max_frames: int, scene_threshold: float,
    silence_db: float, min_silence_frames: int,
) -> list[tuple[int, int]]:
    """Frame ranges [a, b) of clips: cut at scene changes, split > max at the silence nearest the max length.

    A segment is split where a silence of ≥ min_silence_frames has its centre inside
    [a + min, a + max] (the latest such centre); without one, at a + max. Pieces < min are dropped.
    """
    n = len(thumbs)
    bounds = [0, *scene_cuts(thumbs, scene_threshold), n]
    runs = _silence_runs(silent_frames(wav, silence_db), min_silence_frames)
    out = []
    for a, b in zip(bounds, bounds[1:]):
        while b - a > max_frames:
            centres = [(s + e) // 2 for s, e in runs if a + min_frames <= (s + e) // 2 <= a + max_frames]
            cut = max(centres) if centres else a + max_frames
            out.append((a, cut))
            a = cut
        out.append((a, b))
    return [(a, b) for a, b in out if b - a >= min_frames]


# ------------------------------------------------------------------------------------------------
# Face box and crop
# ------------------------------------------------------------------------------------------------


class TorchScriptDetector:
    """A face detector from a local TorchScript file.

    Contract: module(x) with x float32 (N, 3, H, W) RGB in [0, 1] returns float (N, 5) rows
    (x0, y0, x1, y1, score) in pixels of x: the best face per frame (score < min_score = no face).
    """

    def __init__(self, path: str | Path, min_score: float = 0.5, device: str = "cpu") -> None:
        import torch

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"detector.weights={path}: file not found (a TorchScript face detector)")
        self.net = torch.jit.load(str(path), map_location=device).eval()
        self.min_score, self.device = min_score, device

    def detect(self, frames: np.ndarray) -> list[np.ndarray | None]:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)
            out = self.net(x).float().cpu().numpy()  # (N, 5)
        if out.shape != (len(frames), 5):
            raise ValueError(f"detector returned shape {out.shape}, expected ({len(frames)}, 5) rows x0,y0,x1,y1,score")
        return [row[:4].astype(np.float64) if row[4] >= self.min_score else None for row in out]


def centre_box(width: int, height: int, fraction: float) -> np.ndarray:
    side = fraction * min(width, height)
    cx, cy = width / 2, height / 2
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def face_box(
    frames: np.ndarray, item: RawItem, det_cfg: Any, detector: TorchScriptDetector | None
) -> tuple[np.ndarray, str]:
    """(x0, y0, x1, y1) in decoded-frame pixels for a clip, and where it came from.

    annotation: AVSpeech face centre, box side = annotation_fraction · H. detector: median of the boxes
    on every `every`-th frame (rejects when more than max gap are missing: checked by the caller via
    the returned gap fraction in the source string). centre: the documented fallback.
    """
    h, w = frames.shape[1:3]
    kind = det_cfg.kind
    if kind == "annotations" or (kind == "auto" and item.face_centre is not None):
        if item.face_centre is None:
            raise Rejected(NO_ANNOTATION, f"{item.item_id}: detector.kind=annotations but the item has no face centre")
        side = det_cfg.annotation_fraction * h
        cx, cy = item.face_centre[0] * w, item.face_centre[1] * h
        return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]), "annotation"
    if detector is not None and kind in ("auto", "file"):
        boxes = detector.detect(frames[:: det_cfg.every])
        found = [b for b in boxes if b is not None]
        gap = 1.0 - len(found) / max(1, len(boxes))
        if not found:
            raise Rejected(GAPS, f"no face detected in {len(boxes)} probed frames")
        return np.median(np.stack(found), axis=0), f"detector:gap={gap:.3f}"
    return centre_box(w, h, det_cfg.centre_fraction), "centre"


def crop_frames(frames: np.ndarray, box: np.ndarray, params: Any, dsize: int = CROP_SIZE,
                chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, h, w, 3) + one face box → (uint8 (n, dsize, dsize, 3), crop square (x0, y0, x1, y1)).

    One crop per clip (LivePortrait's box convention: models.liveportrait.crop), so head motion stays
    in the motion's pose/translation instead of being removed by a moving crop. Bilinear, zeros outside.
    """
    from models.liveportrait.crop import crop_matrix, crop_rect_from_box, warp_images

    centre, side, angle = crop_rect_from_box(box, params)
    half = side / 2
    square = np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])
    # sample only the region of interest (the crop square, clipped, 1 px margin): same pixels, less work
    x0, y0 = (max(0, int(math.floor(v)) - 1) for v in square[:2])
    x1, y1 = min(frames.shape[2], int(math.ceil(square[2])) + 2), min(frames.shape[1], int(math.ceil(square[3])) + 2)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise Rejected(FACE_SMALL, f"crop square {square.round(1).tolist()} lies outside the {frames.shape[2]}x{frames.shape[1]} frame")
    out = warp_images(frames[:, y0:y1, x0:x1], crop_matrix(centre - np.array([x0, y0]), side, angle, dsize), dsize, chunk)
    return out, square


# ------------------------------------------------------------------------------------------------
# CPU part for one item (runs in a worker process)
# ------------------------------------------------------------------------------------------------


@dataclass
class PreparedClip:
    """A clip after the CPU steps: exactly T frames of 256² crops and T·640 samples."""

    clip_id: str
    item_id: str
    start_s: float  # stream time of the clip's first frame
    crops: np.ndarray  # (T, 256, 256, 3) uint8
    wav: np.ndarray  # (T·640,) int16
    face_box: list[float]  # source pixels
    crop_box: list[float]  # crop square, source pixels
    box_source: str
    source_fps: float
    source_sample_rate: int
    mp4: bytes | None = None  # the crops as 25 fps H.264 (encoded here, in the worker, when write_mp4)


@dataclass
class ClipRejection:
    clip_id: str
    item_id: str
    reason: str
    detail: str


def prepare_item(item: RawItem, cfg: Any, detector: TorchScriptDetector | None = None) -> Iterator[PreparedClip | ClipRejection]:
    """All CPU steps for one item; yields clips (or clip rejections); raises Rejected for the whole item."""
    from models.liveportrait.crop import CropParams

    if item.problem:
        reason, _, detail = item.problem.partition(": ")
        raise Rejected(reason, detail)
    pr = probe(item.video)
    flt = cfg.filters
    if pr.vfr_deviation > flt.vfr_tolerance and not flt.allow_vfr:
        raise Rejected(VFR, f"frame intervals deviate up to {pr.vfr_deviation:.0%} from the median "
                            f"({pr.fps:.2f} fps; filters.vfr_tolerance={flt.vfr_tolerance}); "
                            "set filters.allow_vfr=true to resample by timestamps")
    audio_src = item.video if pr.has_audio else item.audio
    if audio_src is None:
        raise Rejected(NO_AUDIO, f"{item.video} has no audio stream and no separate audio file")
    x, rate, a_start = decode_audio(audio_src)
    a16 = resample_audio(x, rate)
    tl = plan_timeline(pr, a_start, a16, item.start_s, item.end_s, flt.audio_tolerance_s)
    min_f, max_f = int(round(cfg.clips.min_s * FPS)), int(round(cfg.clips.max_s * FPS))
    if tl.num_frames < min_f:
        raise Rejected(TOO_SHORT, f"{tl.num_frames / FPS:.2f} s of common audio/video < clips.min_s={cfg.clips.min_s}")
    idx = select_frames(pr.frame_times, tl.t0, tl.num_frames)
    reader = FrameReader(item.video, pr, cfg.decode_max_side, cfg.decode_backend)
    params = CropParams(scale=cfg.crop_scale, vx_ratio=cfg.crop_vx, vy_ratio=cfg.crop_vy)
    chunk = int(round(cfg.clips.chunk_s * FPS))
    produced = 0
    for c0 in range(0, tl.num_frames, chunk):
        c1 = min(tl.num_frames, c0 + chunk)
        frames = reader.read(idx[c0:c1])  # (n, h, w, 3)
        a0 = tl.audio_offset + c0 * SAMPLES_PER_FRAME
        wav = a16[a0 : a0 + (c1 - c0) * SAMPLES_PER_FRAME]
        segs = split_segments(thumbnails(frames), wav, min_f, max_f, cfg.clips.scene_threshold,
                              cfg.clips.silence_db, max(1, int(round(cfg.clips.min_silence_s * FPS))))
        for a, b in segs:
            produced += 1
            clip_id = f"{item.item_id}_f{c0 + a:06d}"
            try:
                yield _crop_clip(item, clip_id, frames[a:b], wav[a * SAMPLES_PER_FRAME : b * SAMPLES_PER_FRAME],
                                 tl.t0 + (c0 + a) / FPS, reader.scale, params, cfg, detector, pr.fps, rate)
            except Rejected as r:
                yield ClipRejection(clip_id, item.item_id, r.reason, r.detail)
    if produced == 0:
        raise Rejected(TOO_SHORT, f"no piece of ≥ clips.min_s={cfg.clips.min_s} s between scene cuts")


def _crop_clip(item, clip_id, frames, wav, start_s, scale, params, cfg, detector, fps, rate) -> PreparedClip:
    box, source = face_box(frames, item, cfg.detector, detector)
    if source.startswith("detector:"):
        gap = float(source.split("=")[1])
        if gap > cfg.filters.max_detection_gap:
            raise Rejected(GAPS, f"no face in {gap:.0%} of probed frames > filters.max_detection_gap")
    sx, sy = scale
    src_box = np.array([box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy])
    side = max(src_box[2] - src_box[0], src_box[3] - src_box[1])
    if side < cfg.filters.min_face_px:
        raise Rejected(FACE_SMALL, f"face box side {side:.0f} px < filters.min_face_px={cfg.filters.min_face_px}")
    crops, square = crop_frames(frames, box, params)
    src_square = [square[0] / sx, square[1] / sy, square[2] / sx, square[3] / sy]
    mp4 = None
    if cfg.write_mp4:
        from datamodules.video import encode_mp4

        mp4 = encode_mp4(crops, fps=FPS, crf=cfg.crf)
    return PreparedClip(
        clip_id=clip_id, item_id=item.item_id, start_s=float(start_s), crops=crops, wav=to_int16(wav),
        face_box=[float(v) for v in src_box], crop_box=[float(v) for v in src_square], box_source=source.split(":")[0],
        source_fps=float(fps), source_sample_rate=int(rate), mp4=mp4,
    )


# ------------------------------------------------------------------------------------------------
# Main-process (GPU) part: SyncNet, motion, yaw, alignment
# ------------------------------------------------------------------------------------------------


def sync_correct(net: Any, crops: np.ndarray, wav: np.ndarray, min_conf: float, max_offset: int,
                 min_frames: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """SyncNet (metrics.sync) on the 224² BGR crops; reject low confidence or large offsets, else shift.

    Positive offset = audio leads video by k frames: keep video frames [k, T) with audio frames [0, T−k).
    """
    import torch
    import torch.nn.functional as F

    from metrics.sync import sync_scores

    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()  # (T, 3, 256, 256)
    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    bgr = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).flip(-1).contiguous()  # (T, 224, 224, 3)
    offset, conf, dist = sync_scores(net, bgr, wav, vshift=15)
    info = {"sync_offset": int(offset), "sync_confidence": float(conf), "sync_min_dist": float(dist)}
    if conf < min_conf:
        raise Rejected(SYNC_CONF, f"SyncNet confidence {conf:.2f} < filters.sync_min_confidence={min_conf}")
    if abs(offset) > max_offset:
        raise Rejected(SYNC_OFFSET, f"SyncNet offset {offset} frames > filters.sync_max_offset={max_offset}")
    t, k = len(crops), abs(int(offset))
    if k:
        if offset > 0:
            crops, wav = crops[k:], wav[: (t - k) * SAMPLES_PER_FRAME]
        else:
            crops, wav = crops[: t - k], wav[k * SAMPLES_PER_FRAME :]
        if len(crops) < min_frames:
            raise Rejected(TOO_SHORT, f"{len(crops)} frames after offset correction < {min_frames}")
    return crops, wav, info


def extract_motion(extractor: Any, crops: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops (T, 256, 256, 3) → motion float32 (T, 70) and canonical keypoints of frame 0 (21, 3)."""
    import torch

    motions, kp0 = [], None
    for s in range(0, len(crops), batch_size):
        m, kp = extractor.extract_motion(crops[s : s + batch_size])
        motions.append(torch.as_tensor(m).float().cpu().numpy())
        if kp0 is None:
            kp0 = torch.as_tensor(kp[0]).float().cpu().numpy()
    return np.concatenate(motions).astype(np.float32), kp0.astype(np.float32)


def check_yaw(motion: np.ndarray, max_abs_yaw: float) -> None:
    from models.motion import YAW as YAW_INDEX

    yaw = float(np.abs(motion[:, YAW_INDEX]).max())
    if yaw > max_abs_yaw:
        raise Rejected(YAW, f"|yaw| reaches {yaw:.1f}° > filters.max_abs_yaw_deg={max_abs_yaw}")


def assert_aligned(motion: np.ndarray, wav: np.ndarray, crops: np.ndarray) -> int:
    """T frames of motion = T crops = T·640 samples exactly; raise AlignmentError otherwise. Returns T."""
    t = motion.shape[0]
    if crops.shape[0] != t or wav.shape[0] != t * SAMPLES_PER_FRAME:
        raise AlignmentError(f"misaligned clip: motion {t} frames, crops {crops.shape[0]} frames, "
                             f"audio {wav.shape[0]} samples (expected {t * SAMPLES_PER_FRAME})")
    return t
