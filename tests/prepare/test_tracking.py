"""`playmate prepare` with S3FD face tracks: crops follow the moving face, the dominant track wins over a
second face, clips are cut where the track breaks, short/absent tracks are rejected by reason; and the
real S3FD.from_file is what `detector.kind: s3fd` builds."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.prepare.conftest import StubExtractor, make_cfg
from tests.prepare.test_pipeline import samples
from media import FACE_A, FACE_B, ColourFaceDetector, draw_faces, write_video

from datamodules.prepare import run_prepare
from datamodules.video import decode_frames

N = 100  # 4 s at 25 fps


def _moving(k):  # the speaker crosses the frame left to right
    return (40 + 0.7 * k, 60 + 6 * np.sin(k / 10))


def _colour_centroid(img: np.ndarray, colour, tol: int = 40) -> tuple[float, float, int]:
    m = (np.abs(img.astype(np.int16) - np.asarray(colour, np.int16)) < tol).all(-1)
    ys, xs = np.nonzero(m)
    return (float(xs.mean()), float(ys.mean()), int(m.sum())) if m.any() else (np.nan, np.nan, 0)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    videos = {
        # A crosses the frame; B enters at frame 55 and stays (45 frames ≥ min_s, but it overlaps A in time)
        "moving": [(FACE_A, _moving), (FACE_B, lambda k: (150, 88) if k >= 55 else None)],
        # A, gone for 30 frames (> max_missed 25), back for the last 25: two tracks, the second too short
        "broken": [(FACE_A, lambda k: _moving(k) if k < 45 or k >= 75 else None)],
        "brief": [(FACE_A, lambda k: _moving(k) if k < 15 else None)],  # a 11-frame track: too short
        "noface": [],
    }
    for i, (name, faces) in enumerate(videos.items()):
        write_video(raw / f"{name}.mp4", fps=25, frames=draw_faces(N, faces, seed=i), seed=i)
    det = ColourFaceDetector()
    cfg = make_cfg(dataset="folder", input=raw, output=tmp_path_factory.mktemp("out") / "ds", decode_max_side=192,
                   **{"clips.min_s": 1.0, "detector.kind": "s3fd", "detector.weights": "unused.pth"})
    summary = run_prepare(cfg, extractor=StubExtractor(), detector=det)
    return summary, samples(Path(cfg.output)), det


def test_crops_follow_the_dominant_face(tracked) -> None:
    summary, got, det = tracked
    assert det.calls == 4 * N // 5  # detector.every = 5
    (moving,) = [s for k, s in got.items() if "moving" in k]
    meta = moving["meta"]
    # every 5th frame detected: the track runs from frame 0 to the last detection (95)
    assert meta["clip_id"].endswith("_f000000") and meta["num_frames"] == 96 and meta["face_box_source"] == "s3fd_track"
    crops = decode_frames(moving["mp4"])
    a = np.array([_colour_centroid(c, FACE_A) for c in crops])
    # the face stays where the LivePortrait crop puts it (x centre; y 0.1·crop side below it), never drifts
    # although it moves 67 px (≈ 2.5 face widths) across the source frame
    assert np.all(a[:, 2] > 500)
    assert np.abs(a[:, 0] - 128).max() < 12 and np.abs(a[:, 1] - 153.6).max() < 12
    assert np.ptp(a[:, 0]) < 16
    b = np.array([_colour_centroid(c, FACE_B)[2] for c in crops])
    assert b[:55].max() == 0 and b[-1] > 1000 and b.max() < a[:, 2].min()  # B comes into view, A stays the face
    fb = meta["face_box"]  # median tracked box, source pixels: the 29 × 37 ellipse
    assert fb[2] - fb[0] == pytest.approx(29, abs=3) and fb[3] - fb[1] == pytest.approx(37, abs=3)


def test_clips_are_cut_where_the_track_breaks_and_rejections_counted(tracked) -> None:
    summary, got, _ = tracked
    (broken,) = [s for k, s in got.items() if "broken" in k]
    assert broken["meta"]["clip_id"].endswith("_f000000") and broken["meta"]["num_frames"] == 41  # detections 0…40
    assert broken["wav"].size == 41 * 640
    assert len(got) == 2 and summary["clips"]["kept"] == 2
    assert summary["clips"]["rejected"] == {"face_track_too_short": 1, "no_face_track": 1}
    rej = {r["clip"].split("_f")[0].split("-")[-1]: r for r in summary["rejected_clips"]}
    assert rej["brief"]["reason"] == "face_track_too_short" and "11 frames < clips.min_s (25 frames)" in rej["brief"][
        "detail"]
    assert rej["noface"]["reason"] == "no_face_track" and "20 probed frames" in rej["noface"]["detail"]


def test_kind_s3fd_builds_the_real_detector_from_the_file(tmp_path) -> None:
    from datamodules.prepare.face import TorchScriptDetector, make_detector
    from models.s3fd import S3FD, S3FDNet
    from models.weights import WeightsError

    torch.manual_seed(0)
    net = S3FDNet()
    torch.save(net.state_dict(), tmp_path / "sfd_face.pth")
    for kind in ("s3fd", "auto"):
        cfg = make_cfg(input=tmp_path, output=tmp_path / "o", **{"detector.kind": kind,
                                                                 "detector.weights": str(tmp_path / "sfd_face.pth")})
        det = make_detector(cfg)
        assert isinstance(det, S3FD) and det.weights_path == str(tmp_path / "sfd_face.pth")
        assert torch.equal(det.net.state_dict()["conf.0.weight"], net.state_dict()["conf.0.weight"])
    assert make_detector(make_cfg(input=tmp_path, output=tmp_path / "o")) is None  # no weights: centre / annotations
    torch.jit.script(torch.nn.Identity()).save(str(tmp_path / "det.pt"))
    with pytest.raises(WeightsError, match=r"detector\.weights.*needs detector\.kind=file"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.load notices the TorchScript archive
        make_detector(make_cfg(input=tmp_path, output=tmp_path / "o", **{"detector.weights": str(tmp_path / "det.pt")}))
    file_cfg = make_cfg(input=tmp_path, output=tmp_path / "o", **{"detector.kind": "file",
                                                                  "detector.weights": str(tmp_path / "det.pt")})
    assert isinstance(make_detector(file_cfg), TorchScriptDetector)
    bad = make_cfg(input=tmp_path, output=tmp_path / "o", **{"detector.kind": "s3fd"}).check()
    assert bad == [("detector.weights", "detector.kind=s3fd needs detector.weights=PATH (sfd_face.pth)")]
