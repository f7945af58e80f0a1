"""The synthetic-world renderer for any motion, and `playmate generate --video` without face-model weights."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from datamodules.synthetic import make_identity, render_frames, synthesize_clip
from datamodules.video import count_frames, encode_mp4
from pl_modules.commands import main as cli
from pl_modules.inference.synthetic_render import CAPTION, look_for, side_by_side, synthetic_frames

BAND = 28  # rows of the caption band at the bottom (two lines)


@pytest.fixture(scope="module")
def clip():
    return synthesize_clip(0, 2, identity=1, min_seconds=0.4, max_seconds=0.4)  # 10 frames, with video


def test_world_clips_and_any_motion_are_drawn_by_one_function(clip):
    ident = make_identity(0, 1)
    assert encode_mp4(render_frames(clip.kp, clip.motion, ident), fps=25) == clip.mp4  # `playmate synth`'s video
    look = look_for(clip.kp, clip.meta)  # a synthetic clip's meta gives back its identity's colours
    assert (look.skin, look.background, look.lips) == (ident.skin, ident.background, ident.lips)
    plain = render_frames(clip.kp, clip.motion, ident)
    shown = synthetic_frames(clip.kp, clip.motion, look, "generated")
    assert shown.shape == plain.shape == (10, 256, 256, 3)
    np.testing.assert_array_equal(shown[:, :-BAND], plain[:, :-BAND])  # the head is untouched
    assert not np.array_equal(shown[:, -BAND:], plain[:, -BAND:])  # the caption is written on every frame
    assert (shown[:, -BAND:] > 200).any(axis=(1, 2, 3)).all()


def test_other_motion_draws_another_face(clip):
    moved = clip.motion.copy()
    moved[:, 64] += 20.0  # yaw +20°
    a, b = synthetic_frames(clip.kp, clip.motion), synthetic_frames(clip.kp, moved)
    assert np.abs(a[:, :-BAND].astype(int) - b[:, :-BAND]).mean() > 1.0
    neutral = look_for(clip.kp, {"clip_id": "x"})  # no synth facts: the neutral palette
    assert neutral.skin != make_identity(0, 1).skin


def test_side_by_side_holds_a_short_ground_truth(clip):
    frames = side_by_side(clip.kp, clip.motion, clip.motion[:4])
    assert frames.shape == (10, 256, 512, 3)
    np.testing.assert_array_equal(frames[:4, :-BAND, :256], frames[:4, :-BAND, 256:])  # same motion, same face
    np.testing.assert_array_equal(frames[9, :-BAND, 256:], frames[3, :-BAND, 256:])  # its last frame held
    assert not np.array_equal(frames[9, :-BAND, :256], frames[9, :-BAND, 256:])


def _streams(path) -> tuple[int, int, int, bool]:
    data = path.read_bytes()
    with av.open(io.BytesIO(data)) as c:
        v = c.streams.video[0]
        return count_frames(data), v.width, v.height, bool(c.streams.audio)


def test_generate_video_without_face_model_writes_mp4_with_audio(stage1_ckpt, audio_short, reference_npz, tmp_path,
                                                                  capsys):
    args = ["generate", str(stage1_ckpt), "--audio", str(audio_short), "--reference", str(reference_npz),
            "--steps", "2", "--out", str(tmp_path / "m.npy")]
    assert cli([*args, "--video", str(tmp_path / "v.mp4")]) == 0
    assert CAPTION in capsys.readouterr().out
    frames = np.load(tmp_path / "m.npy").shape[0]
    assert frames == round(2.0 * 25)  # the 2 s audio
    assert _streams(tmp_path / "v.mp4") == (frames, 256, 256, True)
    with av.open(str(tmp_path / "v.mp4")) as c:  # the audio lasts as long as the video (AAC pads < 1 frame)
        a = c.streams.audio[0]
        assert abs(float(a.duration * a.time_base) - frames / 25) < 0.1
    truth = np.repeat(np.load(reference_npz)["motion"][None], 30, axis=0)  # shorter than the audio: last held
    np.savez(tmp_path / "clip.npz", motion=truth)
    assert cli([*args, "--video", str(tmp_path / "sbs.mp4"), "--ground-truth", str(tmp_path / "clip.npz")]) == 0
    assert _streams(tmp_path / "sbs.mp4") == (frames, 512, 256, True)


def test_generate_video_flag_combinations_name_the_fix(stage1_ckpt, audio_short, reference_npz, tmp_path, capsys):
    args = ["generate", str(stage1_ckpt), "--audio", str(audio_short), "--reference", str(reference_npz)]
    assert cli([*args, "--ground-truth", str(reference_npz)]) == 2
    assert "add --video OUT.mp4" in capsys.readouterr().err
    assert cli([*args, "--video", str(tmp_path / "v.mp4"), "--source-image", "face.png"]) == 2
    assert "add --face-model" in capsys.readouterr().err
    assert cli([*args, "--video", str(tmp_path / "v.mp4"), "--ground-truth", str(tmp_path / "none.npz")]) == 2
    assert "ground-truth motion" in capsys.readouterr().err and not (tmp_path / "v.mp4").exists()


def test_help_states_the_renderer(capsys):
    with pytest.raises(SystemExit):
        cli(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "synthetic-world renderer" in text and "--ground-truth" in text


def test_demo_writes_a_stage_one_and_per_emotion_stage_two_video(stage1_ckpt, stage2_ckpt, clip, tmp_path):
    from datamodules.clips import EvalClip
    from pl_modules.demo import demo_videos

    held_out = EvalClip(clip.key.replace("/", "_"), clip.motion, clip.kp, clip.wav, clip.meta)
    paths = demo_videos(stage1_ckpt, stage2_ckpt, held_out, tmp_path, steps=2, seed=0, emotions=("happy", "sad"))
    assert list(paths) == ["stage1", "stage2_happy", "stage2_sad"]
    for path in paths.values():
        assert _streams(path) == (10, 512, 256, True)
    assert paths["stage2_happy"].read_bytes() != paths["stage2_sad"].read_bytes()  # the emotion changes the motion
