"""models.face_tracks: syncnet_python's track_shot and crop_video, re-implemented here the way the published
code is written (dicts, list removal, np.pad of the whole frame), against ours on random detections; and
the rules one by one."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal
from scipy.interpolate import interp1d

from models.cv_resize import resize_linear
from models.face_tracks import (
    TrackParams,
    box_iou,
    detect_frames,
    link_detections,
    smooth_boxes,
    syncnet_crop,
    syncnet_crops,
    track_shot,
)


def ref_track_shot(scenefaces, num_failed_det=25, min_track=100, min_face_size=100):
    tracks = []
    while True:
        track = []
        for framefaces in scenefaces:
            for face in framefaces:
                if track == []:
                    track.append(face)
                    framefaces.remove(face)
                elif face["frame"] - track[-1]["frame"] <= num_failed_det:
                    if box_iou(face["bbox"], track[-1]["bbox"]) > 0.5:
                        track.append(face)
                        framefaces.remove(face)
                        continue
                else:
                    break
        if track == []:
            break
        elif len(track) > min_track:
            framenum = np.array([f["frame"] for f in track])
            bboxes = np.array([np.array(f["bbox"]) for f in track])
            frame_i = np.arange(framenum[0], framenum[-1] + 1)
            bboxes_i = np.stack([interp1d(framenum, bboxes[:, ij])(frame_i) for ij in range(4)], axis=1)
            if max(np.mean(bboxes_i[:, 2] - bboxes_i[:, 0]), np.mean(bboxes_i[:, 3] - bboxes_i[:, 1])) > min_face_size:
                tracks.append({"frame": frame_i, "bbox": bboxes_i})
    return tracks


def ref_crop_video(frames, track, cs=0.4):
    dets = {"x": [], "y": [], "s": []}
    for det in track["bbox"]:
        dets["s"].append(max((det[3] - det[1]), (det[2] - det[0])) / 2)
        dets["y"].append((det[1] + det[3]) / 2)
        dets["x"].append((det[0] + det[2]) / 2)
    for k in dets:
        dets[k] = signal.medfilt(dets[k], kernel_size=13)
    out = []
    for fidx, frame in enumerate(track["frame"]):
        bs = dets["s"][fidx]
        bsi = int(bs * (1 + 2 * cs))
        padded = np.pad(frames[frame], ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=(110, 110))
        my, mx = dets["y"][fidx] + bsi, dets["x"][fidx] + bsi
        face = padded[int(my - bs) : int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)) : int(mx + bs * (1 + cs))]
        out.append(resize_linear(face, (224, 224)))
    return np.stack(out)


def random_detections(n: int, seed: int, size=(240, 320)) -> list[np.ndarray]:
    """Three moving faces with jitter and dropouts (one leaves for 40 frames), plus small false positives."""
    rng = np.random.default_rng(seed)
    h, w = size
    dets = []
    for k in range(n):
        rows = []
        for f, (x0, y0, side, vx) in enumerate(((60, 80, 110, 0.8), (230, 120, 120, -0.5), (150, 40, 104, 0.2))):
            if rng.random() < 0.15 or (f == 1 and 60 <= k < 100):
                continue
            x, y = x0 + vx * k + rng.normal(0, 2), y0 + rng.normal(0, 2)
            s = side + rng.normal(0, 3)
            rows.append([x - s / 2, y - s / 2, x + s / 2, y + s * 0.6, rng.uniform(0.9, 1)])
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            rows.append([x, y, x + 12, y + 12, rng.uniform(0.9, 1)])
        rows = [rows[i] for i in rng.permutation(len(rows))]
        dets.append(np.asarray(rows, np.float64).reshape(-1, 5))
    return dets


@pytest.mark.parametrize("seed", [0, 1])
def test_tracks_and_crops_equal_the_published_pipeline(seed: int) -> None:
    n = 160
    dets = random_detections(n, seed)
    frames = np.random.default_rng(seed).integers(0, 256, (n, 240, 320, 3), dtype=np.uint8)
    params = TrackParams(min_track=30)
    ref_faces = [[{"frame": f, "bbox": row[:-1].tolist(), "conf": row[-1]} for row in d] for f, d in enumerate(dets)]
    ref = ref_track_shot(ref_faces, min_track=30)
    got = track_shot(dets, params)
    assert len(ref) >= 2 and len(got) == len(ref)  # the case is not trivial: several tracks survive
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(g.frames, r["frame"])
        np.testing.assert_array_equal(g.boxes, r["bbox"])
    r, g = ref[0], got[0]
    np.testing.assert_array_equal(syncnet_crops(frames, g, params), ref_crop_video(frames, r))


def test_linking_rules() -> None:
    box = np.array([[10.0, 10.0, 30.0, 30.0, 0.99]])
    empty = np.empty((0, 5))
    # IoU must exceed 0.5: a box shifted so that IoU == 0.5 exactly starts a new track
    half = box.copy()
    half[0, [1, 3]] += 20 / 3  # overlap 20 × 13.33 → IoU = 266.7 / 533.3 = 0.5
    assert box_iou(box[0], half[0]) == pytest.approx(0.5)
    assert len(link_detections([box, half])) == 2
    # at most 25 frames after the track's last detection
    assert [len(t) for t in link_detections([box] + [empty] * 24 + [box])] == [2]
    assert [len(t) for t in link_detections([box] + [empty] * 25 + [box])] == [1, 1]
    # the published loop removes from the list it iterates: the face after a taken one waits for the next pass
    two = np.array([[10.0, 10.0, 30.0, 30.0, 0.99], [11.0, 10.0, 31.0, 30.0, 0.98]])
    assert [[f for f, _ in t] for t in link_detections([two, two])] == [[0, 1], [0, 1]]


def test_track_filters_interpolation_and_smoothing() -> None:
    dets = [np.array([[0.0, 0.0, 100.0 + k, 100.0, 0.95]]) if k % 4 == 0 else np.empty((0, 5)) for k in range(41)]
    (t,) = track_shot(dets, TrackParams(min_track=10, min_face_size=100, every=1))  # 11 detections > 10
    assert t.frames.tolist() == list(range(41)) and t.detections == 11
    np.testing.assert_allclose(t.boxes[:, 2], 100 + np.arange(41))  # linear between detections
    assert track_shot(dets, TrackParams(min_track=11)) == []  # needs MORE than min_track
    assert len(track_shot(dets, TrackParams(min_track=43, every=4))) == 1  # every k: detections·k
    assert track_shot(dets, TrackParams(min_track=10, min_face_size=120)) == []  # mean side 120 ≤ 120
    s, x, y = smooth_boxes(t, 13, "reference")
    assert s[20] == pytest.approx(60.0) and x[20] == pytest.approx(60.0)  # median of a monotone run
    assert x[0] == pytest.approx(50.0)  # zero padding: the first value is the smallest of its window
    sn, xn, _ = smooth_boxes(t, 13, "nearest")
    assert xn[0] == pytest.approx(50.0) and sn[-1] == pytest.approx(70.0)


def test_crop_window_extends_below_the_centre_and_pads_with_110() -> None:
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[100:, :] = 255  # lower half white
    params = TrackParams(crop_size=56)  # s = 20: rows 80 … 136 (56 rows), columns 72 … 128 (56 columns): no resize
    crop = syncnet_crop(frame, 20.0, 100.0, 100.0, params)
    assert crop.shape == (56, 56, 3)
    assert (crop[:20] == 0).all() and (crop[20:] == 255).all()  # 20 rows above the centre, 36 below
    corner = syncnet_crop(frame, 20.0, 5.0, 5.0, params)  # near the top-left corner: padding shows
    assert (corner[:, :10] == 110).all() and (corner[:10] == 110).all() and corner[30, 30, 0] == 0


def test_detect_frames_every_k_and_batches() -> None:
    class Det:
        def __init__(self):
            self.seen = []

        def detect_faces(self, image, conf_th=0.9, scales=(0.25,)):
            self.seen.append((int(image[0, 0, 0]), conf_th, tuple(scales)))
            return np.array([[1.0, 2.0, 3.0, 4.0, 0.95]])

    frames = np.arange(7, dtype=np.uint8)[:, None, None, None].repeat(3, 3).repeat(4, 1).repeat(4, 2)
    d = Det()
    out = detect_frames(d, frames, TrackParams(every=3, conf_th=0.8, scales=(0.5,)))
    assert d.seen == [(0, 0.8, (0.5,)), (3, 0.8, (0.5,)), (6, 0.8, (0.5,))]
    assert [len(o) for o in out] == [1, 0, 0, 1, 0, 0, 1] and out[1].shape == (0, 5)
