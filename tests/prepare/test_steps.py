"""Each CPU/GPU step of data preparation on small synthetic inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from media import vfr_times, write_corrupt, write_truncated, write_video  # tests/prepare/media.py

from datamodules.prepare import face, media, rejections, segment
from datamodules.prepare.adapters import RawItem
from datamodules.prepare.config import DetectorConfig
from datamodules.prepare.motion import assert_aligned, check_yaw, sync_correct
from datamodules.prepare.rejections import Rejected


@pytest.fixture(scope="module")
def clip30(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "a.mp4", seconds=2.0, fps=30, rate=44100)


def test_probe_cfr_and_vfr(clip30, tmp_path):
    pr = media.probe(clip30)
    assert pr.fps == pytest.approx(30.0) and len(pr.frame_times) == 60 and pr.has_audio
    assert pr.vfr_deviation < 0.01 and pr.end == pytest.approx(2.0)
    vfr = media.probe(write_video(tmp_path / "vfr.mp4", pts=vfr_times(1.0)))
    assert vfr.vfr_deviation > 0.3


@pytest.mark.parametrize("kind", ["random_bytes", "truncated"])
def test_probe_rejects_corrupt(clip30, tmp_path, kind):
    if kind == "random_bytes":
        p = write_corrupt(tmp_path / "x.mp4")
    else:
        p = write_truncated(tmp_path / "t.mp4", clip30, 0.5)
    with pytest.raises(Rejected) as e:
        media.probe(p)
    assert e.value.reason == rejections.CORRUPT and str(p) in e.value.detail


def test_decode_audio_mono_and_missing(clip30, tmp_path):
    x, rate, start = media.decode_audio(clip30)
    assert rate == 44100 and x.ndim == 1 and x.dtype == np.float32 and start == pytest.approx(0.0, abs=1e-3)
    assert x.size >= 2.0 * 44100 and np.abs(x).max() > 0.1
    with pytest.raises(Rejected) as e:
        media.decode_audio(write_video(tmp_path / "silent.mp4", seconds=1.0, rate=None))
    assert e.value.reason == rejections.NO_AUDIO


def test_resample_audio_polyphase_keeps_frequency():
    t = np.arange(44100) / 44100
    y = media.resample_audio(np.sin(2 * np.pi * 440 * t).astype(np.float32), 44100)
    assert y.shape == (16000,) and y.dtype == np.float32
    assert np.argmax(np.abs(np.fft.rfft(y))) == 440  # 1 s at 16 kHz: bin = Hz
    assert media.to_int16(np.array([2.0, -2.0, 0.5])).tolist() == [32767, -32768, 16384]


def test_select_frames_nearest_timestamp_30_to_25():
    src = np.arange(30) / 30
    assert media.select_frames(src, 0.0, 6).tolist() == [0, 1, 2, 4, 5, 6]
    assert media.select_frames(np.arange(15) / 15, 0.0, 5).tolist() == [0, 1, 1, 2, 2]  # 15 → 25 fps repeats


def test_timeline_is_exact_and_rejects_short_audio(clip30):
    pr = media.probe(clip30)
    a16 = np.zeros(int(2.05 * 16000), np.float32)
    tl = media.plan_timeline(pr, 0.0, a16)
    assert tl.num_frames == 50 and tl.audio_offset == 0
    with pytest.raises(Rejected) as e:
        media.plan_timeline(pr, 0.0, np.zeros(16000, np.float32), tolerance_s=0.1)
    assert e.value.reason == rejections.AUDIO_SHORT
    seg = media.plan_timeline(pr, 0.0, a16, start_s=0.5, end_s=1.5)
    assert seg.num_frames == 25 and seg.audio_offset == 8000 and seg.t0 == 0.5


def test_frame_reader_decord_matches_pyav(clip30):
    pr = media.probe(clip30)
    idx = media.select_frames(pr.frame_times, 0.0, 50)
    a = media.FrameReader(clip30, pr, 128, "decord").read(idx[:25])
    r = media.FrameReader(clip30, pr, 128, "pyav")
    b = np.concatenate([r.read(idx[:25]), r.read(idx[25:])])
    assert a.shape == (25, 128, 128, 3) and b.shape == (50, 128, 128, 3)
    assert np.abs(a.astype(int) - b[:25].astype(int)).mean() < 2.0
    half = media.FrameReader(clip30, pr, 64, "decord")
    assert half.read(idx[:2]).shape == (2, 64, 64, 3) and half.scale == (0.5, 0.5)


def test_split_segments_scene_cut_silence_and_min_length():
    n = 100
    thumbs = np.zeros((n, 32, 32), np.float32)
    thumbs[50:] = 200.0  # a hard cut at frame 50
    loud = np.full(n * 640, 0.3, np.float32)
    assert segment.split_segments(thumbs, loud, 20, 80, 30.0, -40.0, 5) == [(0, 50), (50, 100)]
    flat = np.zeros((n, 32, 32), np.float32)
    wav = loud.copy()
    wav[60 * 640 : 70 * 640] = 0.0  # silence at frames 60–69 (centre 65)
    assert segment.split_segments(flat, wav, 20, 80, 30.0, -40.0, 5) == [(0, 65), (65, 100)]
    assert segment.split_segments(flat, loud, 20, 80, 30.0, -40.0, 5) == [(0, 80), (80, 100)]  # no silence: at max
    assert segment.split_segments(flat, loud, 25, 80, 30.0, -40.0, 5) == [(0, 80)]  # 20-frame rest < min: dropped


def test_crop_frames_matches_face_model_crop():
    from models.liveportrait.crop import CropParams, crop_face

    frames = np.random.default_rng(0).integers(0, 256, (3, 96, 128, 3), dtype=np.uint8)
    box = np.array([40.0, 30.0, 80.0, 70.0])
    params = CropParams(scale=2.2, vy_ratio=-0.1)
    crops, square = face.crop_frames(frames, box, params)
    ref, _ = crop_face(frames[1], box=box, params=params)
    assert crops.shape == (3, 256, 256, 3)
    assert np.abs(crops[1].astype(int) - ref.astype(int)).max() <= 1
    assert square[2] - square[0] == pytest.approx(40 * 2.2)


class _BrightBox(torch.nn.Module):
    """A scripted stand-in detector: box around the bright pixels, score 0 when there are none."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x.mean(1) > 0.6).float()  # (N, H, W)
        n, h, w = m.shape
        ys = torch.arange(h, dtype=torch.float32)[None, :, None].expand(n, h, w)
        xs = torch.arange(w, dtype=torch.float32)[None, None, :].expand(n, h, w)
        cnt = m.sum((1, 2)).clamp(min=1.0)
        cx, cy = (xs * m).sum((1, 2)) / cnt, (ys * m).sum((1, 2)) / cnt
        r = cnt.sqrt() / 2
        score = (m.sum((1, 2)) > 10).float()
        return torch.stack([cx - r, cy - r, cx + r, cy + r, score], 1)


def test_face_box_sources(tmp_path):
    frames = np.zeros((10, 100, 200, 3), np.uint8)
    frames[:, 40:60, 120:140] = 255
    item = RawItem(item_id="a", video="v.mp4", speaker_id="s")
    box, src = face.face_box(frames, item, DetectorConfig(centre_fraction=0.5), None)
    assert src == "centre" and box.tolist() == [75.0, 25.0, 125.0, 75.0]
    ann = RawItem(item_id="a", video="v.mp4", speaker_id="s", face_centre=(0.25, 0.5))
    box, src = face.face_box(frames, ann, DetectorConfig(annotation_fraction=0.4), None)
    assert src == "annotation" and box.tolist() == pytest.approx([30.0, 30.0, 70.0, 70.0])
    path = tmp_path / "det.pt"
    torch.jit.script(_BrightBox()).save(str(path))
    det = face.TorchScriptDetector(path)
    box, src = face.face_box(frames, item, DetectorConfig(kind="file", weights=str(path), every=2), det)
    assert src == "detector:gap=0.000" and box == pytest.approx([120, 40, 140, 60], abs=1.0)
    frames[::2] = 0  # every probed frame (every=2 → 0, 2, 4, …) loses the face
    with pytest.raises(Rejected) as e:
        face.face_box(frames, item, DetectorConfig(kind="file", every=2), det)
    assert e.value.reason == rejections.GAPS


def test_alignment_and_yaw_checks():
    motion = np.zeros((10, 70), np.float32)
    assert assert_aligned(motion, np.zeros(6400, np.int16), np.zeros((10, 4, 4, 3), np.uint8)) == 10
    with pytest.raises(rejections.AlignmentError):
        assert_aligned(motion, np.zeros(6399, np.int16), np.zeros((10, 4, 4, 3), np.uint8))
    motion[3, 64] = -61.0
    with pytest.raises(Rejected) as e:
        check_yaw(motion, 60.0)
    assert e.value.reason == rejections.YAW


@pytest.mark.parametrize("offset,conf,expect", [(2, 5.0, "video_later"), (-3, 5.0, "audio_later"), (0, 1.0, "low"),
                                                (9, 6.0, "offset")])
def test_sync_correct_shifts_or_rejects(monkeypatch, offset, conf, expect):
    from models import syncnet as sync

    monkeypatch.setattr(sync, "sync_scores", lambda net, f, a, vshift=15: (offset, conf, 7.0))
    crops = np.arange(100, dtype=np.uint8)[:, None, None, None].repeat(256, 1).repeat(256, 2).repeat(3, 3)
    wav = np.repeat(np.arange(100, dtype=np.int16), 640)
    if expect in ("low", "offset"):
        with pytest.raises(Rejected) as e:
            sync_correct(None, crops, wav, 3.0, 5, 75)
        assert e.value.reason == (rejections.SYNC_CONF if expect == "low" else rejections.SYNC_OFFSET)
        return
    c, w, info = sync_correct(None, crops, wav, 3.0, 5, 75)
    k = abs(offset)
    assert len(c) == 100 - k and len(w) == (100 - k) * 640 and info["sync_offset"] == offset
    if offset > 0:  # audio leads: video frame k pairs with audio frame 0
        assert c[0, 0, 0, 0] == k and w[0] == 0
    else:
        assert c[0, 0, 0, 0] == 0 and w[0] == k
