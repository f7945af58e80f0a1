"""End to end: MEAD tree at 30 fps / 44.1 kHz → shards; bad inputs; crash/kill + resume; slices + merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tests.prepare.conftest import StubExtractor, make_cfg
from media import vfr_times, write_corrupt, write_truncated, write_video

from datamodules.contract import decode_sample
from datamodules.prepare import merge_slices, run_prepare
from datamodules.shards import check_dataset, iter_tar_samples
from datamodules.video import count_frames

ROOT = Path(__file__).resolve().parents[2]


def samples(directory: Path) -> dict[str, dict]:
    """key → decoded sample, over the shards listed in manifest.json."""
    manifest = json.loads((directory / "manifest.json").read_text())
    out = {}
    for s in manifest["shards"]:
        for raw in iter_tar_samples(directory / s["name"]):
            assert raw["__key__"] not in out, f"duplicate {raw['__key__']}"
            d = decode_sample(raw, verify_all=True)
            d["digests"] = json.loads(raw["sha256"])
            d["mp4"] = raw.get("mp4")
            out[raw["__key__"]] = d
    return out


def assert_same_samples(a: dict, b: dict, exact_motion: bool = True) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        if exact_motion:
            assert a[k]["digests"] == b[k]["digests"], k
        else:
            for m in ("wav", "mp4"):
                assert a[k]["digests"][m] == b[k]["digests"][m], (k, m)
            np.testing.assert_allclose(a[k]["motion"], b[k]["motion"], atol=1e-4)


@pytest.fixture(scope="module")
def reference(mead_tree, tmp_path_factory):
    """One uninterrupted single-slice run with the stand-in extractor."""
    root, _ = mead_tree
    out = tmp_path_factory.mktemp("ref") / "mead"
    summary = run_prepare(make_cfg(input=root, output=out, maxcount=2), extractor=StubExtractor())
    return out, summary


def test_mead_30fps_44k_to_aligned_labelled_shards(reference, mead_tree):
    out, summary = reference
    _, expect = mead_tree
    problems, info = check_dataset(out)
    assert problems == [] and info["samples"] == 6
    got = samples(out)
    for key, s in got.items():
        meta = s["meta"]
        t = s["motion"].shape[0]
        assert (meta["fps"], meta["sample_rate"], s["sample_rate"], s["channels"]) == (25, 16000, 16000, 1)
        assert t == meta["num_frames"] == 90 and s["wav"].shape == (t * 640,)  # 3.6 s at 25 fps, exactly T·640
        assert count_frames(s["mp4"]) == t
        assert (meta["source_fps"], meta["source_sample_rate"]) == (30.0, 44100)
        assert f"{meta['emotion']}:{int(meta['intensity'])}" == expect[meta["item_id"]]
        assert meta["face_box_source"] == "centre" and key == f"mead-{meta['clip_id']}"
    assert summary["items"]["rejected"] == {"corrupt_video": 1, "no_audio": 1}
    rej = {r["item"]: r["reason"] for r in summary["rejected_items"]}
    assert rej == {k: v for k, v in expect.items() if ":" not in v}
    assert json.loads((out / "summary.json").read_text())["clips"]["kept"] == 6
    assert not any("left_30" in k for k in got)  # views=[front]
    from pl_modules.commands import main

    assert main(["shards", "check", str(out)]) == 0  # `playmate shards check`


def test_bad_inputs_are_rejected_with_reasons_never_crash(tmp_path):
    raw = tmp_path / "raw"
    good = write_video(raw / "good.mp4", seconds=3.4)
    write_truncated(raw / "truncated.mp4", good, 0.6)
    write_corrupt(raw / "corrupt.mp4")
    write_video(raw / "vfr.mp4", pts=vfr_times(3.6))
    write_video(raw / "short_audio.mp4", seconds=3.4, audio_seconds=2.0)
    write_video(raw / "silent.mp4", seconds=3.4, rate=None)
    write_video(raw / "nolabel.mp4", seconds=3.4)
    write_video(raw / "tiny.mp4", seconds=1.5)
    labels = tmp_path / "labels.csv"
    names = ["good", "truncated", "corrupt", "vfr", "short_audio", "silent", "tiny"]
    labels.write_text("path,emotion,intensity,speaker\n" + "".join(f"{n}.mp4,happy,1,s\n" for n in names))
    cfg = make_cfg(dataset="folder", input=raw, output=tmp_path / "out", labels=str(labels))
    summary = run_prepare(cfg, extractor=StubExtractor())
    rej = {r["item"]: r["reason"] for r in summary["rejected_items"]}
    assert rej == {"corrupt": "corrupt_video", "truncated": "corrupt_video", "vfr": "variable_frame_rate",
                   "short_audio": "audio_shorter_than_video", "silent": "no_audio", "nolabel": "missing_label",
                   "tiny": "too_short"}
    assert summary["items"]["failed"] == 0 and summary["clips"]["kept"] == 1
    assert check_dataset(tmp_path / "out")[0] == []
    # allow_vfr: the VFR file is resampled by timestamps to exactly 25 fps / T·640 samples
    cfg2 = make_cfg(dataset="folder", input=raw, output=tmp_path / "out2", **{"filters.allow_vfr": True})
    run_prepare(cfg2, extractor=StubExtractor())
    got = {s["meta"]["item_id"]: s for s in samples(tmp_path / "out2").values()}
    assert got["vfr"]["motion"].shape[0] * 640 == got["vfr"]["wav"].size and got["vfr"]["meta"]["num_frames"] >= 75


class Crash(BaseException):
    """Stands in for SIGKILL inside the process: not an Exception, so nothing catches it."""


class CrashingExtractor(StubExtractor):
    def __init__(self, crash_on_call: int) -> None:
        super().__init__()
        self.calls, self.crash_on_call = 0, crash_on_call

    def extract_motion(self, frames):
        self.calls += 1
        if self.calls == self.crash_on_call:
            raise Crash()
        return super().extract_motion(frames)


def test_crash_then_resume_equals_uninterrupted(reference, mead_tree, tmp_path):
    root, _ = mead_tree
    cfg = make_cfg(input=root, output=tmp_path / "out", maxcount=2)
    with pytest.raises(Crash):
        # 2 calls per clip; 3 clips written: shard 0 closed, shard 1 open
        run_prepare(cfg, extractor=CrashingExtractor(crash_on_call=7))
    sdir = tmp_path / "out" / "slices" / "s000"
    assert sorted(p.name for p in sdir.glob("*.tar")) == ["mead-s000-p000-000000.tar", "mead-s000-p000-000001.tar"]
    assert not (tmp_path / "out" / "manifest.json").exists()
    again = StubExtractor()
    run_prepare(cfg, extractor=again)
    assert again.frames_seen == 4 * 90  # clip 3 (in the partial shard) and clips 4–6 redone; clips 1–2 not
    assert not (sdir / "mead-s000-p000-000001.tar").exists()  # the partial shard was discarded
    assert check_dataset(tmp_path / "out")[0] == []
    assert_same_samples(samples(tmp_path / "out"), samples(reference[0]))
    third = StubExtractor()
    run_prepare(cfg, extractor=third)  # a finished slice: nothing is redone
    assert third.frames_seen == 0 and len(samples(tmp_path / "out")) == 6


def test_two_array_tasks_plus_merge_equal_one_task(reference, mead_tree, tmp_path):
    root, _ = mead_tree
    out = tmp_path / "out"
    run_prepare(make_cfg(input=root, output=out, slice=0, num_slices=2, maxcount=2), extractor=StubExtractor())
    with pytest.raises(ValueError, match=r"slices \[1\] are missing"):
        merge_slices(out)
    run_prepare(make_cfg(input=root, output=out, slice=1, num_slices=2, maxcount=2, num_workers=2),
                extractor=StubExtractor())
    merge_slices(out)
    assert check_dataset(out)[0] == []
    assert_same_samples(samples(out), samples(reference[0]))
    a, b = (json.loads((d / "stats.json").read_text()) for d in (out, reference[0]))
    for k in ("exp_mean", "exp_std", "pose_std"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-12)
    s = json.loads((out / "summary.json").read_text())
    assert s["clips"]["kept"] == 6 and s["items"]["rejected"] == {"corrupt_video": 1, "no_audio": 1}
    with pytest.raises(ValueError, match="started with num_slices=2, now 1"):
        run_prepare(make_cfg(input=root, output=out, maxcount=2), extractor=StubExtractor())


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from pl_modules.commands import main; sys.exit(main(sys.argv[1:]))",
            "prepare", str(ROOT / "configs" / "prepare.yaml"), *args]


def test_real_face_model_on_random_weights(mead_tree, tmp_path):
    """The production extractor path: load_face_model (tiny random weights in the public file layout)."""
    from datamodules.prepare.motion import load_extractor
    from models.liveportrait.testing import write_random_weights

    root, _ = mead_tree
    write_random_weights(tmp_path / "lp", seed=0, cfg="tiny")
    cfg = make_cfg(input=root, output=tmp_path / "out", face_model_dir=str(tmp_path / "lp"), face_model_preset="tiny",
                   max_items=2, write_mp4=False, batch_size=45)
    summary = run_prepare(cfg)  # loads the model itself (no injected extractor)
    assert summary["clips"]["kept"] == 2 and check_dataset(tmp_path / "out")[0] == []
    for s in samples(tmp_path / "out").values():
        assert s["motion"].shape == (90, 70) and s["kp"].shape == (21, 3) and np.isfinite(s["motion"]).all()
    with pytest.raises(ValueError, match="face_model_dir: not set"):
        load_extractor(make_cfg(input=root, output=tmp_path), "cpu")


@pytest.mark.slow
def test_kill_prepare_subprocess_then_resume_with_real_face_model(mead_tree, tmp_path):
    """SIGKILL a real `playmate prepare` (LivePortrait FaceModel, tiny random weights) mid-run, rerun, compare."""
    from datamodules.prepare.motion import load_extractor
    from models.liveportrait.testing import write_random_weights

    root, _ = mead_tree
    weights = tmp_path / "lp"
    write_random_weights(weights, seed=0, cfg="tiny")
    common = [f"input={root}", f"face_model_dir={weights}", "face_model_preset=tiny", "maxcount=1",
              "decode_max_side=128", "filters.min_face_px=32", "dataset=mead"]
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cli(*common, f"output={out}"), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ledger = out / "slices" / "s000" / "ledger.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if ledger.is_file() and ledger.read_text().count('"type": "shard"') >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"prepare ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert '"type": "complete"' not in ledger.read_text()
    done = subprocess.run(_cli(*common, f"output={out}"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert check_dataset(out)[0] == []
    ref = tmp_path / "ref"
    cfg = make_cfg(input=root, output=ref, face_model_dir=str(weights), face_model_preset="tiny", maxcount=1)
    run_prepare(cfg, extractor=load_extractor(cfg, "cpu"))
    a, b = samples(out), samples(ref)
    assert len(a) == 6
    assert_same_samples(a, b, exact_motion=False)
    assert all(np.abs(s["motion"][:, 63:66]).max() < 97.5 and np.isfinite(s["kp"]).all() for s in a.values())


def test_cli_errors_exit_2(tmp_path, capsys):
    from pl_modules.commands import main

    base = ["prepare", str(ROOT / "configs" / "prepare.yaml"), "dataset=mead", f"input={tmp_path}",
            f"output={tmp_path}/o"]
    assert main([*base, "clips.max_len=3"]) == 2
    assert "did you mean 'clips.max_s'" in capsys.readouterr().err
    (tmp_path / "M003" / "video" / "front").mkdir(parents=True)
    (tmp_path / "M003" / "video" / "front" / "x.mp4").write_bytes(b"")
    assert main(base) == 2
    assert "x.mp4: path does not match; MEAD layout is" in capsys.readouterr().err
    assert main([*base[:-1], f"output={tmp_path}/nothing", "--merge"]) == 2
    assert "no slice directories" in capsys.readouterr().err


def test_sync_filter_corrects_offset_and_rejects(tmp_path, monkeypatch):
    """filters.sync: offset 2 → 2 frames trimmed with exact alignment (mp4 re-encoded); low confidence → rejected."""
    from models import syncnet as sync

    raw = tmp_path / "raw"
    write_video(raw / "a.mp4", seconds=3.6, seed=1)
    write_video(raw / "b.mp4", seconds=3.6, seed=2)
    scores = {}

    def fake_scores(net, frames, audio, vshift=15):
        assert frames.shape[1:] == (224, 224, 3) and audio.dtype == np.int16 and len(audio) == len(frames) * 640
        scores[len(scores)] = 1
        return (2, 6.0, 7.0) if len(scores) == 1 else (0, 1.0, 9.0)

    monkeypatch.setattr(sync, "sync_scores", fake_scores)
    cfg = make_cfg(dataset="folder", input=raw, output=tmp_path / "out", **{"filters.sync": True})
    summary = run_prepare(cfg, extractor=StubExtractor(), sync_net=object())
    assert summary["clips"]["rejected"] == {"sync_low_confidence": 1} and summary["clips"]["kept"] == 1
    (s,) = samples(tmp_path / "out").values()
    assert s["motion"].shape[0] == 88 and s["wav"].size == 88 * 640 and count_frames(s["mp4"]) == 88
    assert s["meta"]["sync_offset"] == 2 and s["meta"]["start_s"] == pytest.approx(0.08)


def test_avspeech_segment_annotation_box_and_audio_offset(tmp_path):
    """A CSV segment [1.0, 5.0] s of a 6 s video: 100 frames starting at t = 1 s, audio cut at the same instant."""
    from datamodules.prepare.media import decode_audio, resample_audio, to_int16

    raw = tmp_path / "raw"
    video = write_video(raw / "yt0.mp4", seconds=6.0, seed=3)
    (raw / "avspeech_train.csv").write_text("yt0,1.0,5.0,0.5,0.45\nmissing,0.0,4.0,0.5,0.5\n")
    summary = run_prepare(make_cfg(dataset="avspeech", input=raw, output=tmp_path / "out", decode_backend="pyav"),
                          extractor=StubExtractor())
    assert summary["items"]["rejected"] == {"missing_video": 1}
    (s,) = samples(tmp_path / "out").values()
    meta = s["meta"]
    assert s["motion"].shape[0] == 100 and meta["start_s"] == 1.0 and meta["face_box_source"] == "annotation"
    cx = (meta["face_box"][0] + meta["face_box"][2]) / 2
    cy = (meta["face_box"][1] + meta["face_box"][3]) / 2
    assert (cx, cy) == pytest.approx((64.0, 0.45 * 128))
    x, rate, a0 = decode_audio(video)
    ref = to_int16(resample_audio(x, rate))[16000 : 16000 + 100 * 640]
    np.testing.assert_array_equal(s["wav"], ref)
