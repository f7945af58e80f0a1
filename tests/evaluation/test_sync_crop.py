"""The Sync-C/Sync-D crop of an evaluation: syncnet_python's S3FD face-track crop by default with real SyncNet and
S3FD weights, the whole face crop otherwise, the mode in every protocol, `--s3fd` / `--sync-crop`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from configs.evaluation import EvaluationConfig
from datamodules.clips import load_clips
from metrics.sync import SyncMetric
from models.face_tracks import TrackParams
from models.s3fd import S3FD, S3FDNet
from models.syncnet import SyncNet
from pl_modules.evaluation.evaluator import Evaluator, build_metrics
from tests.evaluation.test_evaluation import StandInRenderer, TinySync, generator_for


class DiscDetector:
    """S3FD's interface: the box of the pixels that differ from the flat background (the test videos' face disc)."""

    def detect_faces(self, image, conf_th=0.9, scales=(0.25,)):
        m = (np.abs(image.astype(np.int16) - image[0, 0].astype(np.int16)) > 12).any(-1)
        if not m.any():
            return np.empty((0, 5))
        ys, xs = np.nonzero(m)
        return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.99]], np.float64)


def test_rendered_evaluation_on_face_track_crops(eval_assets):
    cfg = EvaluationConfig(num_clips=2, face_model_dir="injected", eval_size=128, metrics=["sync"])
    kw = {"crop_mode": "s3fd_track", "detector": DiscDetector(), "track_params": TrackParams(min_track=5,
                                                                                          min_face_size=20)}
    metrics = {"sync": SyncMetric(TinySync(), **kw), "sync_gt": SyncMetric(TinySync(), **kw)}
    ev = Evaluator(cfg, metrics=metrics, random_nets=["sync"], face_model=StandInRenderer())
    res = ev.run(generator_for(eval_assets["exp1"]), load_clips([str(eval_assets["vds"])], 2))
    assert res.scalars["sync_num_videos"] == 2 and res.scalars["sync_num_videos_gt"] == 2
    assert np.isfinite(res.scalars["sync_c"]) and np.isfinite(res.scalars["sync_d_gt"])
    assert all("sync_c" in r and "sync_c_gt" in r for r in res.per_clip)
    p = res.protocol
    assert p["metrics"]["sync"]["crop_mode"] == "s3fd_track" and p["metrics"]["sync"]["no_track"] == 0
    assert p["resolutions"]["sync"].startswith("128x128 RGB → S3FD face tracks (min_track 5, min face 20 px)")


def test_track_crop_is_the_default_with_real_syncnet_and_s3fd_weights(tmp_path):
    torch.manual_seed(0)
    torch.save({k: v for k, v in SyncNet().state_dict().items() if not k.endswith("num_batches_tracked")},
               tmp_path / "syncnet_v2.model")
    torch.save(S3FDNet().state_dict(), tmp_path / "sfd_face.pth")
    sync, s3fd = str(tmp_path / "syncnet_v2.model"), str(tmp_path / "sfd_face.pth")

    def built(**kw):
        out, _, skipped = build_metrics(EvaluationConfig(face_model_dir="x", metrics=["sync"], **kw))
        return out["sync"]

    m = built(syncnet_weights=sync, s3fd_weights=s3fd)
    assert m.crop_mode == "s3fd_track" and isinstance(m.detector, S3FD) and m.track_params == TrackParams()
    proto = m.protocol()
    assert proto["face_detector"]["path"] == s3fd and len(proto["face_detector"]["sha256"]) == 64
    assert built(syncnet_weights=sync).crop_mode == "whole"  # no S3FD weights
    assert built(syncnet_weights=sync, s3fd_weights=s3fd, sync_crop="whole").crop_mode == "whole"
    assert built(random_weights=True, s3fd_weights=s3fd).crop_mode == "whole"  # auto needs real SyncNet weights
    assert built(random_weights=True, s3fd_weights=s3fd, sync_crop="s3fd_track").crop_mode == "s3fd_track"
    assert m.state_dict() == {}  # neither network in a checkpoint
    with pytest.raises(ValueError, match="needs s3fd_weights"):
        EvaluationConfig(sync_crop="s3fd_track")
    with pytest.raises(ValueError, match="eval_size 64 < 112"):
        EvaluationConfig(sync_crop="s3fd_track", s3fd_weights=s3fd, eval_size=64)


def test_cli_flags(tmp_path, capsys, monkeypatch):
    from pl_modules.commands import main
    from pl_modules.evaluation import offline

    seen = []
    monkeypatch.setattr(offline, "evaluate_checkpoints", lambda c, d, o, cfg, *a, **k: seen.append(cfg) or tmp_path)
    assert main(["evaluate", "x.ckpt", "--data", "d", "--syncnet", "a.model", "--s3fd", "b.pth"]) == 0
    assert main(["evaluate", "x.ckpt", "--data", "d"]) == 0
    assert (seen[0].s3fd_weights, seen[0].sync_crop, seen[0].sync_crop_mode) == ("b.pth", "auto", "s3fd_track")
    assert seen[1] == EvaluationConfig(metrics=seen[1].metrics)  # every default from the dataclass
    code = main(["evaluate", "x.ckpt", "--data", str(tmp_path), "--sync-crop", "s3fd_track"])
    assert code == 2 and "sync_crop=s3fd_track needs s3fd_weights (--s3fd PATH" in capsys.readouterr().err
