"""Audio encoders (mel, wav2vec2 from a local directory) and precomputed features in shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.audio import (
    AudioEncoderConfig,
    MelEncoder,
    audio_feature_shape,
    build_audio_encoder,
    encoder_flops_per_window,
    mel_filterbank,
)


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer, width-32 Wav2Vec2Model saved with save_pretrained (the real format)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8),  # 320-sample stride, like the real one
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("w2v")
    Wav2Vec2Model(cfg).save_pretrained(d)
    return d


def _wav(b: int = 2, seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    from datamodules.synthetic import synth_audio

    return torch.from_numpy(np.stack([synth_audio(seconds, seed + i) for i in range(b)]).astype(np.float32) / 32768)


def test_mel_shapes_and_determinism() -> None:
    cfg = AudioEncoderConfig()
    enc = build_audio_encoder(cfg)
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    wav = _wav()  # (2, 32000) = 50 frames
    for frames in (50, 37, 61):  # exact, truncated, zero-padded
        f = enc(wav, frames)
        assert f.shape == (2, frames, 1, 80) and f.dtype == torch.float32 and torch.isfinite(f).all()
    torch.testing.assert_close(enc(wav, 50), build_audio_encoder(cfg)(wav, 50), rtol=0, atol=0)
    assert audio_feature_shape(cfg) == (1, 80)
    assert MelEncoder(AudioEncoderConfig(n_mels=40))(wav, 10).shape == (2, 10, 1, 40)
    # frame t sees audio around frame t only: silence after a clip leaves its frames unchanged
    padded = torch.cat([wav, torch.zeros(2, 6400)], dim=1)
    torch.testing.assert_close(enc(padded, 60)[:, :50], enc(wav, 50), rtol=0, atol=1e-5)


def test_mel_follows_loudness_and_filterbank() -> None:
    enc = build_audio_encoder(AudioEncoderConfig())
    t = torch.arange(16000) / 16000
    tone = 0.5 * torch.sin(2 * torch.pi * 440 * t)
    wav = torch.cat([tone[:8000], torch.zeros(8000)])[None]  # 12.5 frames of tone, then silence
    f = enc(wav, 25)[0, :, 0]  # (25, 80)
    silence = (np.log(1e-6) + 6.5) / 4
    torch.testing.assert_close(f[14:], torch.full_like(f[14:], silence), rtol=0, atol=1e-4)
    assert (f[:12].max(-1).values > silence + 3).all()  # the tone's band is loud in every tone frame
    fb = mel_filterbank(1024, 80, 40.0, 7600.0)
    assert fb.shape == (513, 80) and (fb >= 0).all() and (fb.sum(0) > 0).all()
    with pytest.raises(ValueError, match="n_fft"):
        MelEncoder(AudioEncoderConfig(n_fft=512))


def test_wav2vec2_round_trip_and_interpolation(tiny_wav2vec2: Path) -> None:
    from transformers import Wav2Vec2Model

    cfg = AudioEncoderConfig(name="wav2vec2", wav2vec2_path=str(tiny_wav2vec2))
    assert audio_feature_shape(cfg) == (2, 32)
    enc = build_audio_encoder(cfg)
    enc.train()  # a frozen encoder stays in eval mode
    assert not enc.training and not enc.model.training and not any(p.requires_grad for p in enc.parameters())
    wav = _wav(b=2, seconds=1.0)  # 16000 samples → 49 wav2vec2 frames
    for frames in (25, 7, 49):
        assert enc(wav, frames).shape == (2, frames, 2, 32)
    ref = Wav2Vec2Model.from_pretrained(tiny_wav2vec2).eval()
    x = (wav - wav.mean(1, keepdim=True)) / torch.sqrt(wav.var(1, keepdim=True, unbiased=False) + 1e-7)
    with torch.no_grad():
        hidden = torch.stack(ref(x, output_hidden_states=True).hidden_states[1:], dim=2)  # (B, N, L, C)
        n = hidden.shape[1]
        torch.testing.assert_close(enc(wav, n), hidden)  # same length: interpolation is the identity
        mid = enc(wav, 2 * n - 1)  # align_corners: odd frames are midpoints of neighbours
        torch.testing.assert_close(mid[:, 1::2], (hidden[:, :-1] + hidden[:, 1:]) / 2, rtol=1e-4, atol=1e-5)


def test_wav2vec2_missing_files_name_the_key(tmp_path: Path, tiny_wav2vec2: Path) -> None:
    with pytest.raises(ValueError, match="audio.wav2vec2_path"):
        build_audio_encoder(AudioEncoderConfig(name="wav2vec2"))
    with pytest.raises(FileNotFoundError, match="audio.wav2vec2_path.*not a directory"):
        audio_feature_shape(AudioEncoderConfig(name="wav2vec2", wav2vec2_path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as e:
        build_audio_encoder(AudioEncoderConfig(name="wav2vec2", wav2vec2_path=str(tmp_path / "empty")))
    assert "audio.wav2vec2_path" in str(e.value) and "config.json" in str(e.value)
    assert "model.safetensors" in str(e.value) and "pytorch_model.bin" in str(e.value)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text((tiny_wav2vec2 / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="missing weights") as e:
        build_audio_encoder(AudioEncoderConfig(name="wav2vec2", wav2vec2_path=str(tmp_path / "half")))
    assert "config.json" not in str(e.value).split("missing")[1]
    with pytest.raises(ValueError, match="audio.name"):
        build_audio_encoder(AudioEncoderConfig(name="hubert"))


def test_precompute_adds_audio_features(tmp_path: Path, tiny_wav2vec2: Path) -> None:
    from datamodules.contract import decode_sample
    from datamodules.features import precompute_audio_features
    from datamodules.shards import check_dataset, iter_tar_samples
    from datamodules.synthetic import synthesize_dataset

    src = tmp_path / "src"
    synthesize_dataset(src, clips=3, seed=0, min_seconds=1.0, max_seconds=2.0, maxcount=2)  # 2 shards, with mp4
    cfg = AudioEncoderConfig(n_mels=16)
    manifest = precompute_audio_features(src, tmp_path / "mel", cfg, batch_size=2)
    assert check_dataset(tmp_path / "mel")[0] == []
    assert [s["count"] for s in manifest["shards"]] == [2, 1]
    assert manifest["provenance"]["audio_features"]["encoder"]["name"] == "mel"
    assert manifest["provenance"]["seed"] == 0  # the source's provenance is kept
    enc = build_audio_encoder(cfg)
    src_raw = [r for t in sorted(src.glob("*.tar")) for r in iter_tar_samples(t)]
    dst_raw = [r for t in sorted((tmp_path / "mel").glob("*.tar")) for r in iter_tar_samples(t)]
    assert [r["__key__"] for r in src_raw] == [r["__key__"] for r in dst_raw]
    for a, b in zip(src_raw, dst_raw):
        s, d = decode_sample(a), decode_sample(b, verify_all=True)
        assert b["mp4"] == a["mp4"] and np.array_equal(s["motion"], d["motion"])
        t = s["motion"].shape[0]
        feats = d["audio_feats"]
        assert feats.dtype == np.float16 and feats.shape == (t, 1, 16)
        ref = enc(torch.from_numpy(s["wav"].astype(np.float32) / 32768)[None], t)[0].numpy()
        np.testing.assert_allclose(feats.astype(np.float32), ref, atol=2e-3)  # batched = one by one
    w2v = AudioEncoderConfig(name="wav2vec2", wav2vec2_path=str(tiny_wav2vec2))
    precompute_audio_features(src, tmp_path / "w2v", w2v, batch_size=4)
    assert check_dataset(tmp_path / "w2v", check_video=False)[0] == []
    first = next(iter_tar_samples(next((tmp_path / "w2v").glob("*.tar"))))
    assert decode_sample(first)["audio_feats"].shape[1:] == (2, 32)
    with pytest.raises(FileExistsError):
        precompute_audio_features(src, tmp_path / "mel", cfg)


def test_wav2vec2_missing_encoder_weight_is_an_error_naming_it(tiny_wav2vec2: Path, tmp_path: Path) -> None:
    """transformers would leave a missing weight randomly initialised; the loader refuses instead."""
    from safetensors.torch import load_file, save_file

    from models.weights import WeightsError

    bad = tmp_path / "w2v"
    bad.mkdir()
    (bad / "config.json").write_text((tiny_wav2vec2 / "config.json").read_text())
    sd = load_file(tiny_wav2vec2 / "model.safetensors")
    dropped = "encoder.layers.1.feed_forward.output_dense.weight"
    save_file({k: v for k, v in sd.items() if k != dropped}, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"audio\.wav2vec2_path.*missing key.*output_dense\.weight"):
        build_audio_encoder(AudioEncoderConfig(name="wav2vec2", wav2vec2_path=str(bad)))
    extra = tmp_path / "w2v_ctc"  # a CTC checkpoint's head is allowed beside the encoder
    extra.mkdir()
    (extra / "config.json").write_text((tiny_wav2vec2 / "config.json").read_text())
    save_file({**sd, "lm_head.weight": torch.zeros(4, 32)}, extra / "model.safetensors", metadata={"format": "pt"})
    enc = build_audio_encoder(AudioEncoderConfig(name="wav2vec2", wav2vec2_path=str(extra)))
    assert enc(torch.zeros(1, 3200), 5).shape == (1, 5, 2, 32)


def test_wav2vec2_flop_formula_matches_the_counted_forward(tiny_wav2vec2: Path) -> None:
    """The formula MFU reports use for the frozen encoder = torch's FLOP counter on the real forward."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = AudioEncoderConfig(name="wav2vec2", wav2vec2_path=str(tiny_wav2vec2))
    encoder = build_audio_encoder(cfg)
    encoder.model.config._attn_implementation = "eager"  # SDPA's matmuls are not counted by the counter
    with FlopCounterMode(display=False) as counter:
        encoder(torch.zeros(1, 125 * 640), 125)
    assert encoder_flops_per_window(cfg, 125) == pytest.approx(counter.get_total_flops(), rel=1e-3)
    assert encoder_flops_per_window(AudioEncoderConfig(name="mel"), 125) == 0
