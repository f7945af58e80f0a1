"""Video encoding (PyAV) and decoding (decord, PyAV fallback) from bytes.

Decoders are created per call, i.e. inside the DataLoader worker that needs frames (decord readers
shared across fork can deadlock). Audio is never read from mp4 in training: shards carry
pre-aligned 16 kHz wav (AAC priming would change sample counts).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np


def encode_mp4(
    frames: np.ndarray,
    fps: int = 25,
    audio: np.ndarray | None = None,
    sample_rate: int = 16_000,
    crf: int = 23,
    path: str | Path | None = None,
) -> bytes:
    """uint8 RGB frames (N, H, W, 3) [+ int16 mono audio] → H.264 (+AAC) mp4 bytes (and file if `path`).

    Encoding is single-threaded with fixed options so the same frames give the same bytes.
    """
    import av

    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        vs = container.add_stream("libx264", rate=fps)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": str(crf), "preset": "veryfast", "threads": "1", "g": str(fps)}
        vs.codec_context.thread_count = 1
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        for f in frames:
            for packet in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)
        if astream is not None:
            a = av.AudioFrame.from_ndarray(audio.reshape(1, -1).astype(np.int16), format="s16", layout="mono")
            a.sample_rate = sample_rate
            a.time_base = Fraction(1, sample_rate)
            a.pts = 0
            for packet in astream.encode(a):
                container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def decode_frames(data: bytes, indices: Sequence[int] | None = None, backend: str = "decord") -> np.ndarray:
    """mp4 bytes → uint8 RGB frames (N, H, W, 3); `indices` selects frames (default: all)."""
    if backend == "decord":
        try:
            import decord
        except ImportError:
            backend = "pyav"
        else:
            vr = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
            idx = list(range(len(vr))) if indices is None else list(indices)
            return vr.get_batch(idx).asnumpy()
    if backend != "pyav":
        raise ValueError(f"unknown video backend {backend!r}; use 'decord' or 'pyav'")
    return _decode_pyav(data, indices)


def _decode_pyav(data: bytes, indices: Sequence[int] | None) -> np.ndarray:
    import av

    wanted = None if indices is None else set(indices)
    out = []
    with av.open(io.BytesIO(data)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if wanted is None or i in wanted:
                out.append(frame.to_ndarray(format="rgb24"))
            if wanted is not None and i >= max(wanted):
                break
    frames = np.stack(out) if out else np.zeros((0, 0, 0, 3), np.uint8)
    if indices is not None:
        order = {j: k for k, j in enumerate(sorted(wanted))}
        frames = frames[[order[j] for j in indices]]
    return frames


def count_frames(data: bytes) -> int:
    """Number of decodable video frames in mp4 bytes (decodes; exact, unlike container metadata)."""
    import av

    n = 0
    with av.open(io.BytesIO(data)) as c:
        for _ in c.decode(video=0):
            n += 1
    return n
