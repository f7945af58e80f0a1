"""wav2vec2 sees the same audio context in training, `shards precompute` and generation.

Every path encodes fixed windows of model.tp + model.t_window frames (encode_windowed). A training
window is one encoder window; precompute and generation cover a long clip with overlapping windows.
The tests measure how far the features of the same audio frames are apart across the three paths, and
that training refuses precomputed features made with another context.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.audio import AudioEncoderConfig, build_audio_encoder, encode_windowed, window_plan
from tests.models.test_audio import tiny_wav2vec2  # noqa: F401  (fixture)


def test_window_plan_covers_the_clip_with_full_windows() -> None:
    assert window_plan(100, 125, 50) == [(0, 0, 100)]
    assert window_plan(125, 125, 50) == [(0, 0, 125)]
    # the last window ends at the clip's end; boundaries halfway between window centres
    assert window_plan(250, 125, 50) == [(0, 0, 100), (75, 100, 162), (125, 162, 250)]
    assert window_plan(275, 125, 50) == [(0, 0, 100), (75, 100, 175), (150, 175, 275)]
    with pytest.raises(ValueError, match="context_overlap 125 must be below context_frames 125"):
        AudioEncoderConfig(context_frames=125, context_overlap=125)


def test_each_frame_comes_from_the_window_it_is_most_central_in() -> None:
    class Position(torch.nn.Module):  # feature = (sample offset of the frame inside its window, window length)
        def forward(self, wav: torch.Tensor, num_frames: int) -> torch.Tensor:
            pos = torch.arange(num_frames, dtype=torch.float32)
            feats = torch.stack([pos, torch.full_like(pos, num_frames)], -1)  # (T, 2)
            return feats[None, :, None].expand(wav.shape[0], -1, -1, -1)  # (B, T, 1, 2)

    feats = encode_windowed(Position(), torch.zeros(2, 250 * 640), 250, context=125, overlap=50)
    assert feats.shape == (2, 250, 1, 2)
    inside = feats[0, :, 0, 0]  # the frame's position inside the window it was taken from
    assert (feats[..., 1] == 125).all()  # every frame from a full-length window
    # windows [0,125) [75,200) [125,250): boundaries halfway between the window centres (62.5, 137.5, 187.5)
    expected = torch.cat([torch.arange(0, 100), torch.arange(100, 162) - 75, torch.arange(162, 250) - 125]).float()
    assert torch.equal(inside, expected)
    # margins: away from the clip's ends every frame has ≥ overlap/2 = 25 frames of audio either side
    assert inside[25:-25].min() >= 25 and (125 - 1 - inside[25:-25]).min() >= 25


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datamodules.synthetic import synthesize_dataset

    d = tmp_path_factory.mktemp("long")
    synthesize_dataset(d / "src", clips=1, seed=3, min_seconds=30.0, max_seconds=30.0, video=False, maxcount=1)
    return d


def test_training_precompute_and_generation_features_agree(long_clip: Path, tiny_wav2vec2: Path) -> None:  # noqa: F811
    from configs.loader import load_experiment
    from datamodules.contract import decode_sample
    from datamodules.features import precompute_audio_features
    from datamodules.shards import iter_tar_samples
    from models.motion import MotionStats
    from pl_modules.inference.generator import MotionGenerator
    from pl_modules.module import MotionDiffusionModule
    from tests.helpers import ROOT, tiny_overrides, write_checkpoint

    w2v = {"audio.name": "wav2vec2", "audio.wav2vec2_path": str(tiny_wav2vec2)}
    cfg = load_experiment(ROOT / "configs" / "stage1.yaml", tiny_overrides(long_clip / "src", **w2v))
    ctx, overlap = cfg.audio.context_frames, cfg.audio.context_overlap
    assert ctx == cfg.model.tp + cfg.model.t_window == 125 and overlap == 50

    # precompute (the CLI's defaults are the training config's)
    enc_cfg = AudioEncoderConfig(name="wav2vec2", wav2vec2_path=str(tiny_wav2vec2))
    assert (enc_cfg.context_frames, enc_cfg.context_overlap) == (ctx, overlap)
    precompute_audio_features(long_clip / "src", long_clip / "pre", enc_cfg)
    sample = decode_sample(next(iter_tar_samples(next((long_clip / "pre").glob("*.tar")))))
    pre = torch.from_numpy(sample["audio_feats"].astype(np.float32))  # (T, L, C)
    wav = torch.from_numpy(sample["wav"].astype(np.float32) / 32768)  # (S,)
    frames = pre.shape[0]
    assert frames == 750

    # generation: the exported checkpoint's encoder and stored config
    gen = MotionGenerator.from_checkpoint(write_checkpoint(long_clip / "ckpt", cfg, MotionStats.identity()))
    generated = gen.audio_features(wav[None], frames)[0]  # (T, L, C)
    np.testing.assert_allclose(generated.numpy(), pre.numpy(), atol=2e-2, rtol=1e-2)  # float16 storage

    # training: the module encodes each window's audio (Tp + T frames) as the step does
    module = MotionDiffusionModule(cfg, MotionStats.identity())
    module.configure_model()

    def train_feats(s: int) -> torch.Tensor:
        batch = {"audio": wav[None, s * 640 : (s + ctx) * 640], "motion": torch.zeros(1, ctx, 70)}
        return module.audio_features(batch)[0]  # (ctx, L, C)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm())

    for s, lo, hi in window_plan(frames, ctx, overlap):  # a training window that is an encoder window:
        np.testing.assert_allclose(train_feats(s)[lo - s : hi - s].numpy(), pre[lo:hi].numpy(),  # identical
                                   atol=2e-2, rtol=1e-2)
    # any other training window sees the same context length, shifted: close, not identical. Measured on
    # its central frames (≥ 25 frames of audio either side in training too), against the stored features
    # and against encoding the whole clip at once (what precompute did before).
    whole = build_audio_encoder(enc_cfg)(wav[None], frames)[0]  # (T, L, C)
    starts = range(5, frames - ctx, 20)
    windowed = [rel(train_feats(s)[25:100], pre[s + 25 : s + 100]) for s in starts]
    at_once = [rel(train_feats(s)[25:100], whole[s + 25 : s + 100]) for s in starts]
    print(f"relative feature distance, training window vs stored features (central frames): windowed median "
          f"{np.median(windowed):.4f} max {max(windowed):.4f}; whole clip median {np.median(at_once):.4f}")
    assert np.median(windowed) < 0.8 * np.median(at_once)


def test_training_refuses_features_precomputed_with_another_context(long_clip: Path, tiny_wav2vec2: Path,  # noqa: F811
                                                                     tmp_path: Path, capsys) -> None:
    from pl_modules.commands import main
    from tests.helpers import ROOT, tiny_overrides

    assert main(["shards", "precompute", str(long_clip / "src"), str(tmp_path / "pre100"), "--encoder", "wav2vec2",
                 "--wav2vec2-path", str(tiny_wav2vec2), "--context-frames", "100", "--context-overlap", "40"]) == 0
    capsys.readouterr()
    ov = tiny_overrides(tmp_path / "pre100", tmp_path / "run", **{
        "data.audio_source": "precomputed", "audio.name": "wav2vec2", "audio.wav2vec2_path": str(tiny_wav2vec2)})
    assert main(["train", str(ROOT / "configs" / "stage1.yaml"), *ov]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "audio.context_frames is 125 but its features were made with 100" in err[0], err
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    assert main(["shards", "precompute", str(long_clip / "src"), str(tmp_path / "bad"),
                 "--context-frames", "50", "--context-overlap", "50"]) == 2
    assert "--context-overlap" in capsys.readouterr().err


def test_a_stored_config_without_the_context_gets_it_from_its_model_section() -> None:
    from configs.loader import experiment_from_dict, to_container
    from tests.helpers import tiny_config

    stored = to_container(tiny_config(**{"model.tp": "5", "model.t_window": "30"}))
    assert (stored["audio"]["context_frames"], stored["audio"]["context_overlap"]) == (35, 10)
    del stored["audio"]["context_frames"], stored["audio"]["context_overlap"]  # a checkpoint from before
    cfg = experiment_from_dict(stored, "old.ckpt")
    assert (cfg.audio.context_frames, cfg.audio.context_overlap) == (35, 10)
