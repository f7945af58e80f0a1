"""Media I/O of data preparation: probe a video, decode and resample its audio to 16 kHz mono, plan the
25 fps timeline, and read the selected video frames (decord; PyAV fallback), downscaled in the decoder.

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

import numpy as np

from datamodules.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from datamodules.prepare.rejections import AUDIO_SHORT, CORRUPT, CORRUPT_AUDIO, NO_AUDIO, Rejected


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
            raise Rejected(CORRUPT, f"{self.path}: decord failed at frame {self._dpos} "
                                    f"({type(e).__name__}: {e})") from None
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
                    raise Rejected(CORRUPT, f"{self.path}: decoding stopped at frame {self._cur[0] + 1} "
                                            f"of {self.n}") from None
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
