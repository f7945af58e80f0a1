"""The shard contract: one validator on write, on read, and in `playmate shards check`."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import write_random_dataset

from datamodules.contract import (
    ClipSample,
    ContractError,
    clip_meta,
    decode_sample,
    encode_sample,
    make_key,
    sample_problems,
)
from datamodules.shards import DatasetWriter, check_dataset, iter_tar_samples, merge_datasets
from pl_modules.commands import main


def _clip(frames: int = 50, wav_frames: int | None = None, key: str = "t-c0") -> ClipSample:
    rng = np.random.default_rng(0)
    m = rng.normal(size=(frames, 70)).astype(np.float32)
    m[:, 69] = 1.0 + 0.1 * m[:, 69] ** 2  # scale: positive, about 1
    n = (frames if wav_frames is None else wav_frames) * 640
    meta = clip_meta(clip_id="c0", dataset="t", speaker_id="s", motion=m, source="test")
    return ClipSample(key, m, rng.normal(size=(21, 3)).astype(np.float32), np.zeros(n, np.int16), meta)


def test_round_trip_exact():
    c = _clip()
    s = decode_sample(encode_sample(c))
    assert sample_problems(s) == []
    np.testing.assert_array_equal(s["motion"], c.motion)
    np.testing.assert_array_equal(s["kp"], c.kp)
    assert s["wav"].dtype == np.int16 and s["wav"].shape == (50 * 640,)
    assert s["meta"]["num_frames"] == 50 and s["sample_rate"] == 16000


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda c: setattr(c, "wav", c.wav[:-640]), "off by -640"),
        (lambda c: c.motion.__setitem__((3, 5), np.nan), "non-finite"),
        (lambda c: c.motion.__setitem__((3, 64), 120.0), "outside ±97.5"),
        (lambda c: setattr(c, "kp", c.kp[:20]), "kp.npy must be"),
        (lambda c: c.meta.__setitem__("emotion", "bored"), "not one of"),
        (lambda c: c.meta.__setitem__("fps", 30), "contract: 25"),
        (lambda c: setattr(c, "key", "t-c0.bad"), "no dots"),
    ],
)
def test_validator_names_each_problem(mutate, needle):
    c = _clip()
    mutate(c)
    problems = sample_problems(decode_sample(encode_sample(c)))
    assert any(needle in p for p in problems), problems


def test_writer_refuses_bad_clip_and_keeps_written(tmp_path: Path):
    w = DatasetWriter(tmp_path, "t", maxcount=10)
    w.write(_clip(key="t-a"))
    with pytest.raises(ContractError, match="t-b.*expected exactly 32000"):
        w.write(_clip(wav_frames=49, key="t-b"))
    with pytest.raises(ContractError, match="duplicate key"):
        w.write(_clip(key="t-a"))
    manifest = w.close()
    assert manifest["num_samples"] == 1
    problems, summary = check_dataset(tmp_path)
    assert problems == [] and summary["samples"] == 1
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert len(stats["exp_mean"]) == 63 and len(stats["pose_std"]) == 7


def _member_offset(shard: Path, key: str, ext: str) -> int:
    with tarfile.open(shard) as tar:
        for info in tar:
            if info.name == f"{key}.{ext}":
                return info.offset_data
    raise KeyError(key)


def test_check_flipped_byte_names_shard_and_key(random_dataset: Path, capsys):
    shard = random_dataset / "rand-000001.tar"
    key = next(iter_tar_samples(shard))["__key__"]
    off = _member_offset(shard, key, "motion.npy") + 200
    data = bytearray(shard.read_bytes())
    data[off] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems, _ = check_dataset(random_dataset)
    text = "\n".join(map(str, problems))
    assert "rand-000001.tar:-: sha256" in text
    assert f"rand-000001.tar:{key}: " in text and "motion.npy" in text
    assert main(["shards", "check", str(random_dataset)]) == 1
    assert key in capsys.readouterr().out


def test_check_truncated_shard(random_dataset: Path):
    shard = random_dataset / "rand-000002.tar"
    shard.write_bytes(shard.read_bytes()[:30000])
    text = "\n".join(map(str, check_dataset(random_dataset)[0]))
    assert "rand-000002.tar" in text and ("truncated" in text or "holds" in text)


def test_check_short_audio_written_behind_the_writers_back(tmp_path: Path):
    """A sample whose audio is one frame short (not produced by our writer) is named by check."""
    write_random_dataset(tmp_path / "ds", clips=2, per_shard=2)
    import webdataset as wds

    shard = tmp_path / "ds" / "rand-000000.tar"
    samples = list(iter_tar_samples(shard))
    bad = _clip(frames=50, wav_frames=49, key=samples[1]["__key__"])
    with wds.TarWriter(str(shard)) as tw:
        tw.write({k: v for k, v in samples[0].items() if k != "__url__"})
        tw.write(encode_sample(bad))
    text = "\n".join(map(str, check_dataset(tmp_path / "ds")[0]))
    assert f"rand-000000.tar:{samples[1]['__key__']}: " in text and "off by -640" in text


def test_merge_equals_single_write(tmp_path: Path):
    """Slices written in parallel and merged give the statistics of one single write, exactly."""
    rng = np.random.default_rng(3)
    clips = []
    for i in range(6):
        c = _clip(frames=40 + 10 * i, key=f"t-c{i}")
        c.motion = (c.motion * rng.uniform(0.5, 2.0)).astype(np.float32)
        c.motion[:, 63:66] = np.clip(c.motion[:, 63:66], -90, 90)
        c.meta = clip_meta(clip_id=f"c{i}", dataset="t", speaker_id="s", motion=c.motion, source="test")
        clips.append(c)
    with DatasetWriter(tmp_path / "single", "t", maxcount=4) as w:
        for c in clips:
            w.write(c)
    for part, chunk in (("p1", clips[:2]), ("p2", clips[2:])):
        with DatasetWriter(tmp_path / "m" / part, f"t-{part}", maxcount=4) as w:
            for c in chunk:
                w.write(c)
    merged = merge_datasets([tmp_path / "m" / "p1", tmp_path / "m" / "p2"], tmp_path / "m")
    assert merged["num_samples"] == 6 and len(merged["shards"]) == 2
    assert check_dataset(tmp_path / "m")[0] == []
    a = json.loads((tmp_path / "single" / "stats.json").read_text())
    b = json.loads((tmp_path / "m" / "stats.json").read_text())
    for k in ("exp_mean", "exp_std", "pose_std"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12)


def test_make_key_has_no_dots():
    assert make_key("MEAD", "M003/front/angry.level_1.001") == "MEAD-M003_front_angry_level_1_001"
