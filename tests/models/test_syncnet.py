"""SyncNet (models.syncnet): exact public key layout, strict loading, MFCC front end, offset bookkeeping."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models.clock import SAMPLES_PER_FRAME
from models.syncnet import (
    SyncNet,
    audio_window_features,
    mfcc,
    num_windows,
    offset_distances,
    scores_from_distances,
    sync_scores,
)
from models.weights import WeightsError

# Every key and shape of the public syncnet_v2.model (joonson/syncnet_python).
REF = Path(__file__).parent / "data" / "syncnet_state_dict.json"


@pytest.fixture(scope="module")
def syncnet() -> SyncNet:
    torch.manual_seed(0)
    return SyncNet().eval()


def test_state_dict_matches_public_checkpoint_layout(syncnet: SyncNet) -> None:
    ref = {e["key"]: tuple(e["shape"]) for e in json.loads(REF.read_text())["state_dict"]}
    own = {k: tuple(v.shape) for k, v in syncnet.state_dict().items()}
    assert own == ref
    assert sum(p.numel() for p in syncnet.parameters()) == 13631616


def test_strict_load_roundtrip(syncnet: SyncNet, save_sd) -> None:
    path = save_sd(syncnet)  # legacy format: no num_batches_tracked
    net = SyncNet.from_file(path)
    for k, v in syncnet.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(net.state_dict()[k], v)
    assert not net.training


def test_missing_renamed_key_and_missing_file_fail_loudly(syncnet: SyncNet, save_sd, tmp_path: Path) -> None:
    missing = save_sd(syncnet, "missing.pt", edit=lambda sd: {k: v for k, v in sd.items() if k != "netfclip.3.bias"})
    with pytest.raises(WeightsError, match=r"missing key.*netfclip\.3\.bias"):
        SyncNet.from_file(missing)
    renamed = save_sd(syncnet, "renamed.pt",
                      edit=lambda sd: {k.replace("netcnnaud.0.", "netcnnaud.X."): v for k, v in sd.items()})
    with pytest.raises(WeightsError, match=r"netcnnaud\.(0|X)\.weight"):
        SyncNet.from_file(renamed)
    shape = save_sd(syncnet, "shape.pt", edit=lambda sd: {**sd, "netfcaud.3.bias": torch.zeros(3)})
    with pytest.raises(WeightsError, match=r"shape mismatch.*netfcaud\.3\.bias"):
        SyncNet.from_file(shape)
    with pytest.raises(FileNotFoundError, match=r"metrics\.sync\.weights_path: file .*nope\.model"):
        SyncNet.from_file(tmp_path / "nope.model")


def test_forward_shapes(syncnet: SyncNet) -> None:
    with torch.inference_mode():
        assert syncnet.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
        assert syncnet.forward_lip(torch.rand(1, 3, 5, 224, 224) * 255).shape == (1, 1024)


# ---------------------------------------------------------------- MFCC front end


def test_mfcc_frame_count_and_int16_scaling() -> None:
    g = np.random.default_rng(0)
    audio = (g.standard_normal(32000) * 3000).clip(-32768, 32767).astype(np.int16)
    m_int = mfcc(audio)
    assert m_int.shape == (199, 13)  # 1 + ceil((32000 − 400)/160)
    m_float = mfcc(audio.astype(np.float64) / 32768.0)
    np.testing.assert_allclose(m_int[:, 0] - m_float[:, 0], 2 * math.log(32768), atol=1e-6)  # 20.794
    np.testing.assert_allclose(m_int[:, 1:], m_float[:, 1:], atol=1e-6)


def test_mfcc_is_shift_equivariant_by_four_rows() -> None:
    """Prepending k·640 samples shifts the MFCC by exactly 4k rows (away from the boundary)."""
    g = np.random.default_rng(1)
    audio = (g.standard_normal(16000) * 2000).astype(np.int16)
    k = 3
    shifted = np.concatenate([np.zeros(k * SAMPLES_PER_FRAME, np.int16), audio])
    np.testing.assert_allclose(mfcc(shifted)[4 * k + 1 : 4 * k + 60], mfcc(audio)[1:60], rtol=1e-9, atol=1e-9)


def test_window_count_skips_last_window() -> None:
    assert num_windows(50, 50 * SAMPLES_PER_FRAME) == 45
    assert num_windows(50, 30 * SAMPLES_PER_FRAME + 639) == 25
    assert num_windows(4, 10_000) == 0


# ---------------------------------------------------------------- scorer level (features given)


@pytest.mark.parametrize("k", [-5, -2, 0, 3, 7])
def test_scorer_recovers_offset(k: int) -> None:
    g = torch.Generator().manual_seed(0)
    n, d = 80, 256
    z = torch.nn.functional.normalize(torch.randn(n + 40, d, generator=g), dim=1)
    im = z[20 : 20 + n]
    cc = z[20 + k : 20 + k + n] + 0.05 * torch.randn(n, d, generator=g)  # audio feature i = video feature i+k
    off, conf, dist = scores_from_distances(offset_distances(im, cc, 15), 15)
    assert off == k and conf > 0.5 and dist < 1.0


def test_offset_distances_match_loop_reference() -> None:
    g = torch.Generator().manual_seed(2)
    im, cc = torch.randn(12, 8, generator=g), torch.randn(12, 8, generator=g)
    v = 4
    pad = torch.nn.functional.pad(cc, (0, 0, v, v))
    dist = torch.nn.functional.pairwise_distance
    ref = torch.stack([dist(im[[i]].repeat(2 * v + 1, 1), pad[i : i + 2 * v + 1]) for i in range(12)])
    torch.testing.assert_close(offset_distances(im, cc, v), ref)


# ---------------------------------------------------------------- pipeline level (MFCC + framing + windows)


from tests.models.sync_stub import BrightnessEnergyNet, make_clip as _clip  # noqa: E402


@pytest.mark.parametrize("k", [-10, -6, -3, -1, 0, 2, 5, 8, 10])
def test_shifting_audio_by_k_frames_moves_offset_by_k(k: int) -> None:
    net = BrightnessEnergyNet()
    frames, audio, _ = _clip(60)
    base = sync_scores(net, frames, audio)[0]
    assert base == 0
    g = np.random.default_rng(5)
    lead_in = (g.standard_normal(abs(k) * SAMPLES_PER_FRAME) * 300).astype(np.int16)
    shifted = np.concatenate([lead_in, audio]) if k > 0 else audio[abs(k) * SAMPLES_PER_FRAME :]
    off, conf, dist = sync_scores(net, frames, shifted)
    assert off == base - k  # audio delayed by k frames → offset −k; advanced → +k
    assert conf > 0


def test_real_syncnet_audio_embedding_is_shift_equivariant(syncnet: SyncNet) -> None:
    """With any fixed weights, delaying the audio by k frames delays its window embeddings by exactly k,
    so calc_pdist's columns move by k (the offset bookkeeping above then holds for the real network)."""
    g = np.random.default_rng(3)
    audio = (g.standard_normal(40 * SAMPLES_PER_FRAME) * 3000).astype(np.int16)
    k = 4
    shifted = np.concatenate([(g.standard_normal(k * SAMPLES_PER_FRAME) * 3000).astype(np.int16), audio])
    a = audio_window_features(syncnet, audio, 30)
    b = audio_window_features(syncnet, shifted, 30 + k)
    torch.testing.assert_close(b[k + 1 :], a[1:], rtol=1e-4, atol=1e-4)


def test_sync_scores_real_net_tiny_clip_and_input_checks(syncnet: SyncNet) -> None:
    frames, audio, _ = _clip(8, extra=0)
    off, conf, dist = sync_scores(syncnet, frames, audio, vshift=2)
    assert -2 <= off <= 2 and conf >= 0 and math.isfinite(dist)
    with pytest.raises(ValueError, match="int16"):
        sync_scores(syncnet, frames, audio.astype(np.float32))
    with pytest.raises(ValueError, match="224"):
        sync_scores(syncnet, frames[:, :100], audio)
