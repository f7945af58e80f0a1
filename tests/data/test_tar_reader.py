"""The lean shard reader and decoders of the training pipeline agree with tarfile, np.load and wave,
and report damaged shards; several windows per clip come from one decode, counted and resumed exactly."""

from __future__ import annotations

import io
import json
import tarfile
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from configs.schema import DataConfig
from datamodules import motion_wds
from datamodules.contract import decode_npy, decode_wav, encode_npy, verify_digests
from datamodules.motion_wds import MotionDataModule, load_motion_stats
from datamodules.shards import iter_tar_samples
from datamodules.tar_reader import TarError, read_samples, tar_samples
from datamodules.windows import WindowMaker
from models.motion import normalize_motion
from tests.helpers import write_random_dataset
from models.motion import POSE

LONG_KEY = "k" * 120  # longer than a ustar name field: the writer stores it in a pax header


def _write_tar(path: Path, samples: list[dict]) -> Path:
    with wds.TarWriter(str(path)) as w:
        for s in samples:
            w.write(s)
    return path


def _samples() -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"__key__": key, "motion.npy": encode_npy(rng.normal(size=(n, 70)).astype(np.float32)),
             "mp4": rng.bytes(5000 + n), "json": json.dumps({"i": n}).encode()}
            for key, n in (("a", 3), (LONG_KEY, 7), ("c", 600))]


def test_reader_gives_tarfiles_samples_and_skips_the_members_not_asked_for(tmp_path: Path):
    tar = _write_tar(tmp_path / "s.tar", _samples())
    expected = list(iter_tar_samples(tar))  # tarfile, every member
    with open(tar, "rb") as f:
        everything = list(read_samples(f, str(tar)))
    assert [{k: v for k, v in s.items() if k != "__skipped__"} for s in everything] == expected
    assert [s["__key__"] for s in everything] == ["a", LONG_KEY, "c"]
    with open(tar, "rb") as f:
        some = list(read_samples(f, str(tar), members=("motion.npy", "json")))
    for got, want in zip(some, expected):
        assert got["__skipped__"] == ("mp4",)
        assert set(got) == {"__key__", "__url__", "__skipped__", "motion.npy", "json"}
        assert got["motion.npy"] == want["motion.npy"] and got["json"] == want["json"]


class _Pipe(io.RawIOBase):
    """A stream that cannot seek (a pipe or remote shard)."""

    def __init__(self, data: bytes) -> None:
        self.buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        chunk = self.buf.read(min(len(b), 700))  # short reads, as a pipe gives
        b[: len(chunk)] = chunk
        return len(chunk)


def test_a_stream_that_cannot_seek_gives_the_same_samples(tmp_path: Path):
    tar = _write_tar(tmp_path / "s.tar", _samples())
    with open(tar, "rb") as f:
        seekable = list(read_samples(f, "x", members=("json",)))
    piped = list(read_samples(io.BufferedReader(_Pipe(tar.read_bytes())), "x", members=("json",)))
    assert piped == seekable and len(piped) == 3


@pytest.mark.parametrize("cut_in", ["first member of the last sample", "a skipped member"])
def test_a_truncated_shard_goes_to_the_handler_once_and_drops_only_the_sample_being_read(tmp_path: Path, cut_in):
    tar = _write_tar(tmp_path / "s.tar", _samples())
    with tarfile.open(tar) as t:
        info = {i.name: i for i in t}
    member = info["c.motion.npy"] if cut_in.startswith("first") else info[f"{LONG_KEY}.mp4"]
    tar.write_bytes(tar.read_bytes()[: member.offset_data + 100])
    errors: list[Exception] = []
    samples = list(tar_samples([{"url": str(tar)}, {"url": str(tar)}], handler=lambda e: errors.append(e) or True,
                               members=("motion.npy", "json")))
    complete = ["a", LONG_KEY] if cut_in.startswith("first") else ["a"]  # the samples before the cut
    assert [s["__key__"] for s in samples] == complete * 2  # each of the two reads
    assert len(errors) == 2 and all(isinstance(e, TarError) and "truncated" in str(e) and str(tar) in str(e)
                                    for e in errors)
    stopped: list[Exception] = []
    rest = list(tar_samples([{"url": str(tar)}] * 3, handler=lambda e: stopped.append(e) and False))
    assert len(rest) == len(complete)
    assert len(stopped) == 1  # a handler returning False ends the stream


def test_a_damaged_header_or_a_repeated_member_is_a_tar_error(tmp_path: Path):
    tar = _write_tar(tmp_path / "s.tar", _samples())
    data = bytearray(tar.read_bytes())
    data[512 * 2 + 10] ^= 0x01  # a byte of the first member's own header name
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    with open(tmp_path / "bad.tar", "rb") as f, pytest.raises(TarError, match="checksum"):
        list(read_samples(f, "bad.tar"))
    twice = _write_tar(tmp_path / "twice.tar", [{"__key__": "a", "json": b"{}"}, {"__key__": "a", "json": b"{}"}])
    with open(twice, "rb") as f, pytest.raises(TarError, match="'json' appears twice in sample 'a'"):
        list(read_samples(f, "twice.tar"))


def test_a_skipped_member_the_hashes_do_not_record_is_still_reported():
    raw = {"__key__": "a", "json": b"{}", "sha256": json.dumps({"json": _sha(b"{}")}).encode(),
           "__skipped__": ("mp4",)}
    assert verify_digests(raw, ("json",)) == ["mp4"]
    raw["sha256"] = json.dumps({"json": _sha(b"{}"), "mp4": "0" * 64}).encode()
    assert verify_digests(raw, ("json",)) == []


def _sha(b: bytes) -> str:
    import hashlib

    return hashlib.sha256(b).hexdigest()


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4), np.ones((2, 3, 5), np.float16), np.arange(7, dtype=np.int16),
    np.float32(3.5).reshape(()), np.zeros((0, 70), np.float32), np.arange(6, dtype=np.uint8),
    np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)), np.arange(4, dtype=">f4"),
    np.arange(3, dtype=np.float64),
])
def test_npy_decoding_equals_np_load_and_gives_a_writable_array(array):
    b = encode_npy(array)
    got, want = decode_npy(b), np.load(io.BytesIO(b), allow_pickle=False)
    assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
    got[...] = 0  # writable, not a view of the member's bytes


def test_npy_decoding_refuses_object_arrays():
    with pytest.raises(ValueError, match="pickle"):
        decode_npy(encode_npy_object())


def encode_npy_object() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _wav(samples: np.ndarray, channels: int = 1, width: int = 2, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("channels", [1, 2])
def test_wav_decoding_equals_the_wave_module(channels):
    samples = np.random.default_rng(0).integers(-32768, 32767, size=640 * channels * 3).astype("<i2")
    got, rate, ch = decode_wav(_wav(samples, channels, rate=22050))
    assert (rate, ch) == (22050, channels) and got.dtype == np.int16 and np.array_equal(got, samples)
    short = _wav(samples, channels)[:-100]  # a data chunk longer than the bytes: the wave module's answer
    with wave.open(io.BytesIO(short)) as w:
        want = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert np.array_equal(decode_wav(short)[0], want)
    with pytest.raises(ValueError, match="8-bit"):
        decode_wav(_wav(np.zeros(10, np.uint8), width=1))


def test_window_normalisation_is_bit_identical_to_normalize_motion(random_dataset: Path):
    stats = load_motion_stats([str(random_dataset)])
    maker = WindowMaker(stats, 100, 25, "wav")
    motion = (np.random.default_rng(1).normal(size=(160, 70)) * 3).astype(np.float32)
    pose_mean = motion[:, POSE].mean(0)
    want = normalize_motion(torch.from_numpy(motion), stats, torch.from_numpy(pose_mean)).numpy()
    assert np.array_equal(maker.normalize(motion, pose_mean), want)
    s = {"motion": motion, "kp": np.zeros((21, 3), np.float32), "__key__": "k",
         "wav": np.random.default_rng(2).integers(-32768, 32767, 160 * 640).astype(np.int16),
         "meta": {"pose_mean": pose_mean.tolist(), "emotion": None}}
    w = maker.window(s, 10)  # 15 context rows before the clip start
    assert np.array_equal(w["motion"][:15], np.zeros((15, 70))) and np.array_equal(w["motion"][15:], maker.normalize(
        motion[:110], np.asarray(s["meta"]["pose_mean"], np.float32)))
    assert np.array_equal(w["audio"][15 * 640 :], s["wav"][: 110 * 640].astype(np.float32) / 32768.0)
    assert not w["audio"][: 15 * 640].any() and w["audio"].dtype == np.float32


# ------------------------------------------------------------------------------------ windows per clip


def _stream(ds: Path, **kw):
    cfg = DataConfig(train_shards=[str(ds)], batch_size=4, num_workers=0, shuffle_buffer=4, epoch_windows=48,
                     max_bad_fraction=1.0)
    dm = MotionDataModule(replace(cfg, **kw), t_window=100, tp=25)
    dm.setup()
    return dm


def test_several_windows_per_clip_come_from_one_decode_counted_once_and_resume_exactly(tmp_path: Path, monkeypatch):
    write_random_dataset(tmp_path / "ds", clips=8, per_shard=2)
    bad = tmp_path / "ds" / "rand-000002.tar"  # both its clips fail the sha256 check
    bad.write_bytes(bad.read_bytes().replace(b"spk", b"SPK"))
    decodes: list[str] = []
    decode = motion_wds.decode_sample
    monkeypatch.setattr(motion_wds, "decode_sample", lambda raw: decodes.append(raw["__key__"]) or decode(raw))

    batches = list(_stream(tmp_path / "ds", windows_per_clip=3).train_dataloader())
    assert len(batches) == 12
    windows = [(k, int(s)) for b in batches for k, s in zip(b["key"], b["start"])]
    is_bad = [k in ("rand-s0c0004", "rand-s0c0005") for k in decodes]
    n_good = len(decodes) - sum(is_bad)
    # 48 windows from 3 per good clip: 16 decodes, plus the clips still in the 32-window buffer
    assert 16 <= n_good <= 16 + 32 // 3 + 1
    assert len(set(windows)) > 40  # random starts: nearly all windows distinct
    # each sample read is counted once, bad ones once, at the point the newest window was cut
    stats = batches[-1]["data_stats"]
    assert stats["bad"] == sum(is_bad[: stats["seen"]]) > 0 and stats["seen"] <= len(decodes)
    # a clip's windows are mixed, not side by side (unmixed, 2 of every 3 neighbours share a clip)
    keys = [k for k, _ in windows]
    assert sum(a == b for a, b in zip(keys, keys[1:])) < 0.35 * (len(keys) - 1)

    resumed_dm = _stream(tmp_path / "ds", windows_per_clip=3)
    resumed_dm.load_state_dict({"epoch": 0, "batches": 5})
    resumed = list(resumed_dm.train_dataloader())
    assert len(resumed) == 7
    for a, b in zip(resumed, batches[5:]):
        assert a["key"] == b["key"] and a["data_stats"] == b["data_stats"]
        assert all(torch.equal(a[k], b[k]) for k in ("motion", "audio", "start", "ref_motion"))
