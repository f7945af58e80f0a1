"""`playmate generate`: frame counts, audio decoding, references, pose modes, errors, CLI, rendering."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.generate.conftest import reference_motion, tiny_config, write_export, write_wav

from models.dit import reference_id_feat
from models.emotion import EMOTIONS
from models.motion import POSE, MotionStats, normalize_motion
from pl_modules.evaluation.probes import boundary_continuity
from pl_modules.inference import pose
from pl_modules.inference.generator import MotionGenerator, generate_motion
from pl_modules.inference.inputs import GenerationError, load_audio, load_reference
from models.diffusion import NoiseSchedule
from pl_modules.commands import main as cli

STEPS = 3  # DDIM steps in fast tests: the path is the same as with 50


def test_30s_of_44k_stereo_gives_750_frames_and_no_boundary_jump(stage1_ckpt, audio_30s, reference_npz):
    gen = MotionGenerator.from_checkpoint(stage1_ckpt)
    # Random weights read as an ε-predictor sample noise-like motion, the premise of the check below (as an
    # x0-predictor, a random network outputs a smooth function of its inputs, and boundaries are what move).
    gen.config.diffusion.prediction = "eps"
    gen.schedule = NoiseSchedule.from_config(gen.config.diffusion)
    motion = generate_motion(gen, audio_30s, reference_npz, steps=STEPS)
    assert motion.shape == (750, 70) and motion.dtype == np.float32 and np.isfinite(motion).all()
    # Continuity on normalised motion (the model's own units): boundaries at frames 100, 200, …, 700.
    ref = load_reference(reference_npz)
    x = normalize_motion(torch.from_numpy(motion), gen.stats, ref.motion[POSE])
    c = boundary_continuity(x, gen.model.config.t_window)
    assert c["boundaries"] == 7
    # An untrained model samples noise-like motion, so this only shows that a window boundary is not
    # a discontinuity on top of it; the trained-model measurement is test_continuity_trained.py.
    assert c["boundary_max"] <= c["within_max"], c


def test_same_seed_same_motion_other_seed_differs(stage1_ckpt, audio_short, reference_npz):
    gen = MotionGenerator.from_checkpoint(stage1_ckpt)
    a = generate_motion(gen, audio_short, reference_npz, steps=STEPS, seed=3)
    b = generate_motion(gen, audio_short, reference_npz, steps=STEPS, seed=3)
    c = generate_motion(gen, audio_short, reference_npz, steps=STEPS, seed=4)
    assert a.shape == (50, 70)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


# ------------------------------------------------------------------------------------------------
# Audio
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "rate", "channels"), [(2.0, 44_100, 2), (1.3, 8_000, 1), (0.5, 48_000, 6)])
def test_wav_any_rate_and_channels_resampled_to_whole_frames(tmp_path, seconds, rate, channels):
    wav = load_audio(write_wav(tmp_path / "a.wav", seconds, rate, channels))
    frames = round(seconds * 25)
    assert wav.dtype == np.float32 and wav.shape == (frames * 640,)
    assert 0.05 < np.abs(wav).max() <= 1.0  # content survived resampling, in [-1, 1]


def _encode_audio(path: Path, codec: str, seconds: float) -> Path:
    import av

    rate = 44_100
    t = np.arange(round(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = "stereo"
        frame_size = s.codec_context.frame_size or 1024
        fmt = s.codec_context.format.name
        scale = {"s16": 32767, "s32": 2**31 - 1}.get(fmt.rstrip("p"), 1)
        dtype = {"s16": np.int16, "s32": np.int32}.get(fmt.rstrip("p"), np.float32)
        for i in range(0, len(x), frame_size):
            chunk = np.repeat((x[None, i : i + frame_size] * scale).astype(dtype), 2, axis=0)  # (2, n) planar
            f = av.AudioFrame.from_ndarray(chunk if fmt.endswith("p") else chunk.T.reshape(1, -1), format=fmt,
                                           layout="stereo")
            f.sample_rate, f.pts = rate, i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.mark.parametrize(("name", "codec"), [("a.m4a", "aac"), ("a.mp3", "libmp3lame"), ("a.flac", "flac")])
def test_compressed_audio_decodes_to_about_its_duration(tmp_path, name, codec):
    import av

    try:
        path = _encode_audio(tmp_path / name, codec, 3.0)
    except (av.FFmpegError, ValueError) as e:
        pytest.skip(f"this FFmpeg build cannot encode {codec}: {e}")
    wav = load_audio(path)
    # Lossy codecs add encoder priming/padding (≤ ~50 ms): within two frames of 75.
    assert len(wav) % 640 == 0 and abs(len(wav) // 640 - 75) <= 2


def test_unreadable_audio_names_the_file(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00not really a wave file" * 10)
    with pytest.raises(GenerationError, match="broken.wav"):
        load_audio(bad)
    with pytest.raises(GenerationError, match="missing.mp3.*does not exist"):
        load_audio(tmp_path / "missing.mp3")


def test_video_without_audio_stream_is_a_clear_error(tmp_path):
    from datamodules.video import encode_mp4

    path = tmp_path / "silent.mp4"
    encode_mp4(np.zeros((3, 32, 32, 3), np.uint8), path=path)
    with pytest.raises(GenerationError, match="silent.mp4 has no audio stream"):
        load_audio(path)


def test_int16_array_input_and_too_short_audio(stage1_ckpt, reference_npz):
    wav = (np.random.default_rng(0).normal(size=16_000) * 3000).astype(np.int16)  # 1 s
    m = generate_motion(stage1_ckpt, wav, reference_npz, steps=STEPS)
    assert m.shape == (25, 70)
    with pytest.raises(GenerationError, match="shorter than one"):
        generate_motion(stage1_ckpt, wav[:100], reference_npz, steps=STEPS)


# ------------------------------------------------------------------------------------------------
# Reference, emotion, checkpoint errors
# ------------------------------------------------------------------------------------------------


def test_reference_npz_formats(tmp_path):
    motion, kp = reference_motion()
    np.savez(tmp_path / "seq.npz", motion=np.stack([motion, motion + 1]), kp=kp)  # (T, 70): first frame
    ref = load_reference(tmp_path / "seq.npz")
    np.testing.assert_array_equal(ref.motion.numpy(), motion)
    np.savez(tmp_path / "bad.npz", motion=motion[:60], kp=kp)
    with pytest.raises(GenerationError, match=r"bad.npz: motion \(60,\)"):
        load_reference(tmp_path / "bad.npz")
    np.savez(tmp_path / "nokp.npz", motion=motion)
    with pytest.raises(GenerationError, match="`kp`"):
        load_reference(tmp_path / "nokp.npz")
    (tmp_path / "face.png").write_bytes(b"")
    with pytest.raises(GenerationError, match="needs the face model"):
        load_reference(tmp_path / "face.png")


def test_reference_normalised_by_its_own_pose():
    motion, kp = reference_motion()
    stats = MotionStats(torch.zeros(63), torch.full((63,), 0.02), torch.ones(7))
    f = reference_id_feat(torch.from_numpy(kp)[None], torch.from_numpy(motion)[None], stats)
    assert f.shape == (1, 133)
    assert torch.equal(f[0, 63 + 63 :], torch.zeros(7))  # pose part of the reference motion is 0
    torch.testing.assert_close(f[0, 63:126], torch.from_numpy(motion[:63]) / (0.02 + 1e-6))


def test_unknown_emotion_lists_the_valid_ones(stage2_ckpt, audio_short, reference_npz):
    with pytest.raises(GenerationError) as e:
        generate_motion(stage2_ckpt, audio_short, reference_npz, emotion="joyful")
    assert "joyful" in str(e.value) and all(name in str(e.value) for name in EMOTIONS)


def test_emotion_on_stage_one_checkpoint_fails_clearly(stage1_ckpt, audio_short, reference_npz):
    with pytest.raises(GenerationError, match="no emotion controller"):
        generate_motion(stage1_ckpt, audio_short, reference_npz, emotion="happy", steps=STEPS)


def test_stage_two_emotion_changes_expression(stage2_ckpt, audio_short, reference_npz):
    gen = MotionGenerator.from_checkpoint(stage2_ckpt)
    assert gen.model.emotion_controller is not None
    kw = {"steps": STEPS, "seed": 0}
    happy = generate_motion(gen, audio_short, reference_npz, emotion="Happy", **kw)
    sad = generate_motion(gen, audio_short, reference_npz, emotion="sad", **kw)
    assert happy.shape == (50, 70)
    assert not np.allclose(happy[:, :63], sad[:, :63])
    none = generate_motion(gen, audio_short, reference_npz, **kw)  # null emotion, audio CFG only
    assert none.shape == (50, 70) and not np.allclose(none[:, :63], happy[:, :63])


def test_mismatched_audio_encoder_and_weights(tmp_path, audio_short, reference_npz):
    cfg = tiny_config()
    cfg.audio.n_mels = 40  # the DiT was built for 80 mel bands
    ckpt = write_export(tmp_path / "enc", cfg)
    with pytest.raises(GenerationError, match=r"expects audio features.*\(1, 80\).*\(1, 40\)"):
        generate_motion(ckpt, audio_short, reference_npz, steps=STEPS)
    other = write_export(tmp_path / "other", tiny_config(depth=3))
    (ckpt / "model.pt").write_bytes((other / "model.pt").read_bytes())  # weights of another shape
    with pytest.raises(GenerationError, match="export: weights do not match the model.*unexpected key"):
        generate_motion(ckpt, audio_short, reference_npz, steps=STEPS)
    with pytest.raises(GenerationError, match="does not exist"):
        generate_motion(tmp_path / "nowhere", audio_short, reference_npz)


# ------------------------------------------------------------------------------------------------
# Pose modes
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(stage1_ckpt, audio_short, reference_npz):
    gen = MotionGenerator.from_checkpoint(stage1_ckpt)
    return lambda **kw: generate_motion(gen, audio_short, reference_npz, steps=STEPS, **kw)


def test_pose_modes(generated, tmp_path):
    ref, _ = reference_motion()
    base = generated()
    fixed = generated(pose_mode="fixed")
    spin = generated(pose_mode="spin")
    rng = np.random.default_rng(1)
    drv = np.cumsum(rng.normal(scale=0.3, size=(30, 70)), axis=0).astype(np.float32)  # 30 < 50 frames
    drv[:, 69] = 1.0 + 0.01 * np.arange(30)
    np.save(tmp_path / "drv.npy", drv)
    driving = generated(pose_mode="driving", driving=tmp_path / "drv.npy")
    for m in (fixed, spin, driving):  # expression is always the generated one
        np.testing.assert_array_equal(m[:, :63], base[:, :63])
    # generated: the model's pose moves around the reference pose; fixed: the reference pose, constant.
    assert not np.allclose(base[:, 63:], ref[63:])
    np.testing.assert_array_equal(fixed[:, 63:], np.broadcast_to(ref[63:], (50, 7)))
    # spin: the documented path, offsets of pitch and yaw only.
    off = pose.spin_offsets(50).numpy()
    np.testing.assert_allclose(spin[:, 63:65], ref[63:65] + off, atol=1e-5)
    np.testing.assert_array_equal(spin[:, 65:], np.broadcast_to(ref[65:], (50, 5)))
    # driving: per-frame pose changes equal the driving's (angles, t additive; scale as a ratio),
    # frames past the driving's end hold its last pose.
    d = drv[np.minimum(np.arange(50), 29)]
    np.testing.assert_allclose(np.diff(driving[:, 63:69], axis=0), np.diff(d[:, 63:69], axis=0), atol=1e-4)
    np.testing.assert_allclose(driving[0, 63:70], ref[63:70], atol=1e-6)
    np.testing.assert_allclose(driving[:, 69], ref[69] * d[:, 69] / drv[0, 69], rtol=1e-6)


def test_spin_is_smooth_and_starts_at_the_reference():
    off = pose.spin_offsets(400).numpy()
    assert np.abs(off[0]).max() == 0
    assert np.abs(off[:, 1]).max() == pytest.approx(pose.SPIN_YAW_DEG, rel=1e-3)
    assert np.abs(np.diff(off, axis=0)).max() < 1.1  # degrees per frame: no jumps


def test_pose_mode_errors(generated, tmp_path):
    with pytest.raises(GenerationError, match="needs a driving motion"):
        generated(pose_mode="driving")
    with pytest.raises(GenerationError, match="not one of"):
        generated(pose_mode="wobble")
    np.save(tmp_path / "bad.npy", np.zeros((10, 69), np.float32))
    with pytest.raises(GenerationError, match=r"bad.npy has shape \(10, 69\)"):
        generated(pose_mode="driving", driving=tmp_path / "bad.npy")


# ------------------------------------------------------------------------------------------------
# CLI and rendering
# ------------------------------------------------------------------------------------------------


def test_cli_constants_match_the_library():
    from pl_modules.commands import generate as cmd

    assert cmd.POSE_MODES == pose.POSE_MODES and cmd.EMOTIONS == EMOTIONS


def test_cli_writes_npy_and_reports_user_errors(stage1_ckpt, audio_short, reference_npz, tmp_path, capsys):
    out = tmp_path / "o" / "m.npy"
    args = [str(stage1_ckpt), "--audio", str(audio_short), "--reference", str(reference_npz)]
    assert cli(["generate", *args, "--out", str(out), "--steps", "2", "--pose-mode", "fixed"]) == 0
    assert np.load(out).shape == (50, 70)
    assert cli(["generate", *args, "--emotion", "joyful"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "valid emotions: neutral, angry" in err
    assert cli(["generate", *args, "--ground-truth", str(reference_npz)]) == 2
    assert "--video" in capsys.readouterr().err


def test_cli_threads_option_sets_the_generation_threads(stage1_ckpt, audio_short, reference_npz, tmp_path, capsys,
                                                        monkeypatch):
    import pl_modules.inference.generator as generator

    seen, real = [], generator.generate_motion
    monkeypatch.setattr(generator, "generate_motion",
                        lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    args = [str(stage1_ckpt), "--audio", str(audio_short), "--reference", str(reference_npz), "--steps", "1",
            "--out", str(tmp_path / "m.npy")]
    before = torch.get_num_threads()
    assert cli(["generate", *args, "--threads", "2"]) == 0
    assert seen == [2] and torch.get_num_threads() == before  # restored for a library caller
    assert cli(["generate", *args, "--threads", "0"]) == 2 and "--threads must be ≥ 1" in capsys.readouterr().err


def test_auto_threads_uses_the_idle_cores_between_1_and_4(monkeypatch):
    import subprocess
    import sys

    from pl_modules.inference.request import auto_threads

    assert auto_threads(cores=2, load=1.5) == 1  # a loaded 2-core machine: one thread
    assert auto_threads(cores=2, load=0.7) == 1 and auto_threads(cores=2, load=0.2) == 2  # idle: both cores
    assert auto_threads(cores=2, load=6.0) == 1 and auto_threads(cores=64, load=3.0) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert auto_threads() == 3  # the user's explicit setting wins
    code = "import sys, pl_modules.inference.request; assert 'torch' not in sys.modules"
    # the CLI parser stays fast: no torch at import
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_cli_help_lists_modes_and_emotions(capsys):
    with pytest.raises(SystemExit):
        cli(["generate", "--help"])
    text = capsys.readouterr().out
    assert "spin" in text and "surprised" in text and "--reference" in text


def test_render_with_random_face_weights_writes_mp4_with_matching_frames(stage1_ckpt, tmp_path):
    from PIL import Image

    from datamodules.video import count_frames
    from models.liveportrait.testing import write_random_weights

    write_random_weights(tmp_path / "lp", seed=0, cfg="tiny")
    img = (np.random.default_rng(0).integers(0, 255, (300, 280, 3))).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "face.png")
    audio = write_wav(tmp_path / "a.wav", 0.12, rate=16_000, channels=1)  # 3 frames: rendering is slow on CPU
    video, out = tmp_path / "v.mp4", tmp_path / "m.npy"
    code = cli(["generate", str(stage1_ckpt), "--audio", str(audio), "--reference", str(tmp_path / "face.png"),
                "--face-model", str(tmp_path / "lp"), "--face-preset", "tiny", "--video", str(video),
                "--out", str(out), "--steps", "2", "--save-reference", str(tmp_path / "ref.npz")])
    assert code == 0
    assert np.load(out).shape == (3, 70)
    assert count_frames(video.read_bytes()) == 3
    import av

    with av.open(io.BytesIO(video.read_bytes())) as c:
        assert c.streams.audio and c.streams.video[0].width == 512
    ref = load_reference(tmp_path / "ref.npz")  # the extracted reference, reusable without the face model
    assert ref.motion.shape == (70,) and ref.kp.shape == (21, 3)


def test_boundary_continuity_measure_detects_a_planted_jump():
    t = torch.arange(300, dtype=torch.float32)[:, None] / 25
    smooth = torch.sin(t * torch.linspace(0.5, 2.0, 70))  # (300, 70), smooth
    c = boundary_continuity(smooth, 100)
    assert c["boundaries"] == 2 and c["boundary_max"] <= c["within_max"]
    jumped = smooth.clone()
    jumped[200:] += 0.5  # a discontinuity at the second window boundary
    c = boundary_continuity(jumped, 100)
    assert c["boundary_max"] > 5 * c["within_max"]
