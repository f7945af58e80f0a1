"""The aligner runs once per sampled window (`MotionDiT.with_aligned_audio`), with the same numbers.

Its input (the audio features and the start-token mask) never changes while a window is sampled, so
the samplers compute f_a once instead of at every DDIM step and in every CFG pass.
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from _model_helpers import TP, T, make_inputs, perturb_, tiny_config

from models.aligner import AudioAligner
from models.diffusion import DiffusionConfig, NoiseSchedule, SamplerSettings, generate_windowed
from models.dit import Drops, MotionDiT
from models.emotion import EmotionControllerConfig, build_emotion_controller


def _stage_two_model() -> MotionDiT:
    torch.manual_seed(0)
    model = MotionDiT(tiny_config())
    model.attach_emotion_controller(build_emotion_controller(EmotionControllerConfig(), model.config))
    perturb_(model)  # zero-initialised gates and heads would hide any difference
    return model.eval()


def _generate(model: MotionDiT, steps: int = 4) -> torch.Tensor:
    """Two windows (the first on the start token) of three clips, nested CFG, per-clip generators."""
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(3, 2 * T - 3, 1, 16, generator=g)  # (B, N, L, C): the last window edge-padded
    id_feat = torch.randn(3, 133, generator=g)
    settings = SamplerSettings(steps=steps, w_a=1.5, w_e=1.5)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    return generate_windowed(model, NoiseSchedule.from_config(DiffusionConfig()), audio, id_feat, T, TP, settings,
                             emotion=torch.tensor([1, 8, 5]), generator=gens)


def test_generation_with_the_aligned_audio_computed_once_is_bit_identical():
    model = _stage_two_model()
    cached = _generate(model)
    with mock.patch.object(MotionDiT, "with_aligned_audio", lambda self, cond, frames, drops=None: cond):
        recomputed = _generate(model)  # the aligner runs inside every forward, as before
    assert torch.equal(cached, recomputed)


def test_the_aligner_runs_once_per_window_instead_of_once_per_step():
    model, calls = _stage_two_model(), []
    original = AudioAligner.forward

    def counting(self, feats, key_mask=None):
        calls.append(feats.shape[0])
        return original(self, feats, key_mask)

    with mock.patch.object(AudioAligner, "forward", counting):
        _generate(model, steps=5)
    assert calls == [3, 3]  # one call per window, on the 3 clips (not the 9 rows of the CFG passes)


@pytest.mark.parametrize("with_context", [True, False])
def test_forward_with_aligned_audio_equals_the_forward_that_aligns(with_context):
    model = _stage_two_model()
    x_t, t, cond = make_inputs(with_context=with_context)
    drops = Drops(audio=torch.tensor([False, True, False]))
    want = model(x_t, t, cond, drops)
    got = model(x_t, t, model.with_aligned_audio(cond, T), drops)
    assert torch.equal(got, want)
    twice = model.with_aligned_audio(cond, T).repeat(2)
    assert twice.aligned_audio.shape == (6, TP + T, model.config.width)


def test_aligned_audio_is_refused_where_it_would_be_wrong():
    model = _stage_two_model()
    x_t, t, cond = make_inputs()
    aligned = model.with_aligned_audio(cond, T)
    with pytest.raises(ValueError, match="sampling only"):
        model(x_t, t, aligned, Drops(augment=True))  # training draws start tokens per step
    aligned.aligned_audio = aligned.aligned_audio[:, 1:]
    with pytest.raises(ValueError, match="aligned_audio has shape"):
        model(x_t, t, aligned)
