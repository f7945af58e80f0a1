"""Sync-C/Sync-D metric: per-video averaging, skipped short clips, no weights in state, gloo sync; the
syncnet_python track-crop mode against the reference's steps written out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metrics.sync import CROP_TRACK, SyncMetric
from models.clock import SAMPLES_PER_FRAME
from models.face_tracks import TrackParams
from models.syncnet import SyncNet, sync_scores
from tests.models.sync_stub import BrightnessEnergyNet, make_clip
from tests.models.test_face_tracks import ref_crop_video, ref_track_shot
from tests.prepare.media import FACE_A, ColourFaceDetector


def test_sync_metric_video_average_and_no_weights_in_state_dict() -> None:
    torch.manual_seed(0)
    syncnet = SyncNet().eval()
    m = SyncMetric(BrightnessEnergyNet())  # type: ignore[arg-type]
    frames, audio, _ = make_clip(40)
    m.update(frames, torch.from_numpy(audio))
    m.update(frames[:3], torch.from_numpy(audio))  # too short: counted, not scored
    m.add_scores(3, 7.0, 6.5)
    out = m.compute()
    assert int(out["num_videos"]) == 2 and int(out["skipped"]) == 1
    assert m.protocol()["num_videos"] == 2
    assert SyncMetric(syncnet).state_dict() == {}


def _gloo_sync(rank: int, world: int) -> dict:
    m = SyncMetric(None)
    for i in range(rank, 5 if rank == 0 else 3):  # uneven: rank 0 gets 5, rank 1 gets 2
        m.add_scores(i, float(i) + 1, 10.0 - i)
    return {k: v for k, v in m.compute().items()}


def test_gloo_list_states_sync(run_gloo) -> None:
    ref = SyncMetric(None)
    for i in list(range(0, 5)) + list(range(1, 3)):
        ref.add_scores(i, float(i) + 1, 10.0 - i)
    want = ref.compute()
    for r in run_gloo(_gloo_sync):
        for key in ("sync_c", "sync_d", "offset_abs", "num_videos"):
            torch.testing.assert_close(r[key].double(), want[key].double())


# ------------------------------------------------------------------------------------------------
# crop_mode s3fd_track: detect → track → crop → SyncNet, as syncnet_python's run_pipeline + run_syncnet
# ------------------------------------------------------------------------------------------------


def _talking_face(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """RGB (n, 150, 200, 3): grey frames whose brightness follows the audio energy (make_clip), with a
    face-coloured ellipse moving across; int16 audio of (n + 12)·640 samples."""
    frames224, audio, _ = make_clip(n, seed=seed)
    b = frames224[:, 0, 0, 0].numpy()  # (n,) brightness per frame
    yy, xx = np.mgrid[0:150, 0:200]
    video = np.empty((n, 150, 200, 3), np.uint8)
    for t in range(n):
        video[t] = b[t]
        video[t][((xx - 70 - t) / 22) ** 2 + ((yy - 70) / 28) ** 2 < 1] = FACE_A
    return video, audio


def test_track_mode_equals_detect_track_crop_score_of_the_reference() -> None:
    net, det = BrightnessEnergyNet(), ColourFaceDetector(colours=(FACE_A,))
    params = TrackParams(min_track=40, min_face_size=40)
    video, audio = _talking_face(60)
    m = SyncMetric(net, crop_mode=CROP_TRACK, detector=det, track_params=params)  # type: ignore[arg-type]
    m.update(torch.from_numpy(video), torch.from_numpy(audio))
    # the reference's steps, written out: S3FD on every RGB frame (conf 0.9, scale 0.25), track_shot,
    # crop_video (crops of the BGR frames), SyncNet on the track's frames and its audio
    faces = [[{"frame": f, "bbox": row[:-1].tolist(), "conf": row[-1]} for row in det.detect_faces(v, 0.9, [0.25])]
             for f, v in enumerate(video)]
    (track,) = ref_track_shot(faces, min_track=40, min_face_size=40)
    crops = ref_crop_video(np.ascontiguousarray(video[..., ::-1]), track)
    a0, a1 = track["frame"][0] * SAMPLES_PER_FRAME, (track["frame"][-1] + 1) * SAMPLES_PER_FRAME
    off, conf, dist = sync_scores(net, crops, audio[a0:a1])  # type: ignore[arg-type]
    out = m.compute()
    assert len(track["frame"]) == 60 and off == 0 and conf > 1.0  # the crop's brightness follows the audio
    assert (float(out["sync_c"]), float(out["sync_d"])) == (conf, dist)  # the same numbers
    assert float(out["offset_abs"]) == 0 and int(out["num_videos"]) == 1
    # audio delayed by 3 frames: offset −3 through the whole pipeline; a video without a face: counted
    lead_in = (np.random.default_rng(5).standard_normal(3 * SAMPLES_PER_FRAME) * 300).astype(np.int16)
    m.update(torch.from_numpy(video), torch.from_numpy(np.concatenate([lead_in, audio])))
    m.update(torch.from_numpy(np.full_like(video, 90)), torch.from_numpy(audio))
    assert [float(o) for o in m.offset] == [0.0, -3.0]
    out, proto = m.compute(), m.protocol()
    assert int(out["skipped"]) == 1 and proto["no_track"] == 1 and proto["crop_mode"] == CROP_TRACK
    assert proto["tracking"]["min_track"] == 40 and proto["tracking"]["crop_scale"] == 0.4
    assert "no XVID re-encode" in proto["differences_from_syncnet_python"]
    assert SyncMetric(net).protocol()["crop_mode"] == "whole"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a face detector"):
        SyncMetric(net, crop_mode=CROP_TRACK)  # type: ignore[arg-type]
