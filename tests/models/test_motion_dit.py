"""MotionDiT: shapes, zero-init, CFG null audio, start token, determinism, presets, FLOPs."""

from __future__ import annotations

import pytest
import torch
from _model_helpers import TP, T, make_inputs, perturb_, tiny_config
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from models.dit import PRESETS, REF_EXP, MotionDiT, MotionDiTConfig, count_parameters, make_id_feat


def test_output_shape_and_zero_at_init(tiny_dit):
    inputs = make_inputs(batch=3)
    eps = tiny_dit(**inputs)
    assert eps.shape == (3, T, 70)
    assert torch.equal(eps, torch.zeros_like(eps))  # zero-initialised output layers


def test_first_window_accepts_window_only_audio(tiny_dit):
    inputs = make_inputs(batch=2, with_context=False)
    inputs["audio"] = inputs["audio"][:, TP:]  # (B, T, L, C): no audio before the first window
    assert tiny_dit(**inputs).shape == (2, T, 70)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_construct_and_report_parameter_counts(preset):
    model = MotionDiT(MotionDiTConfig(preset=preset))
    cfg = model.config
    assert (cfg.depth, cfg.width, cfg.heads) == tuple(PRESETS[preset][k] for k in ("depth", "width", "heads"))
    assert len(model.blocks) == cfg.depth
    n = count_parameters(model)
    print(f"preset {preset}: {n / 1e6:.2f} M parameters, {model.flops_per_sample() / 1e9:.2f} GFLOP/sample")
    assert n > 0


def test_preset_override_and_validation():
    cfg = MotionDiTConfig(preset="S", depth=3)
    assert (cfg.depth, cfg.width) == (3, 256)
    with pytest.raises(ValueError, match="preset 'XL'"):
        MotionDiTConfig(preset="XL")
    with pytest.raises(ValueError, match="width 100 must be even and divisible by heads 8"):
        MotionDiTConfig(preset="B", width=100)
    with pytest.raises(ValueError, match="conv_kernel 14"):
        MotionDiTConfig(preset="tiny", conv_kernel=14)


def test_bad_shapes_raise_with_values(tiny_dit):
    inputs = make_inputs(batch=2)
    inputs["audio"] = inputs["audio"][:, TP:]  # window-only audio but a context is given
    with pytest.raises(ValueError, match=r"audio has shape \(2, 12, 1, 16\)"):
        tiny_dit(**inputs)


def test_null_audio_used_when_dropped():
    model = MotionDiT(tiny_config()).eval()
    perturb_(model)
    a = make_inputs(batch=2, seed=1)
    b = dict(a, audio=torch.randn_like(a["audio"]))
    drop = torch.tensor([True, True])
    # Dropped audio ⇒ output independent of the audio features.
    assert torch.equal(model(**a, audio_drop=drop), model(**b, audio_drop=drop))
    assert not torch.allclose(model(**a), model(**b))
    # Dropped audio is the learned null embedding: changing it changes the dropped output only.
    ref_kept, ref_drop = model(**a), model(**a, audio_drop=drop)
    with torch.no_grad():
        model.null_audio.add_(1.0)
    assert torch.equal(model(**a), ref_kept)
    assert not torch.allclose(model(**a, audio_drop=drop), ref_drop)
    # Per-sample mask: only sample 0 is dropped.
    mixed = model(**a, audio_drop=torch.tensor([True, False]))
    assert torch.equal(mixed[1], model(**a)[1])


def test_start_token_used_when_context_is_none():
    model = MotionDiT(tiny_config()).eval()
    perturb_(model)
    inputs = make_inputs(batch=2)
    no_ctx = model(**dict(inputs, context=None))
    forced = model(**inputs, context_drop=torch.tensor([True, True]))
    assert torch.equal(no_ctx, forced)  # start token ≡ no context, whatever the context holds
    assert not torch.allclose(no_ctx, model(**inputs))
    with torch.no_grad():
        model.start_motion.add_(1.0)
    assert not torch.allclose(no_ctx, model(**dict(inputs, context=None)))
    # The start token also hides context audio, so window-only and full audio agree.
    full = model(**dict(inputs, context=None))
    window_only = model(**dict(inputs, context=None, audio=inputs["audio"][:, TP:]))
    torch.testing.assert_close(full, window_only, atol=1e-5, rtol=1e-4)


def test_training_randomness_is_seeded_and_switchable():
    model = MotionDiT(tiny_config(dropout=0.1))
    perturb_(model)
    model.train()
    inputs = make_inputs(batch=4)
    torch.manual_seed(7)
    y1 = model(**inputs)
    torch.manual_seed(7)
    y2 = model(**inputs)
    assert torch.equal(y1, y2)
    y3 = model(**inputs)  # fresh randomness (dropout, drops, context noise)
    assert not torch.equal(y1, y3)
    model.eval()
    assert torch.equal(model(**inputs), model(**inputs))  # eval: deterministic, no augmentation
    torch.manual_seed(0)
    a = model(**inputs, augment=True)
    assert not torch.equal(a, model(**inputs))


def test_context_drop_is_forced_and_augmented_on_top():
    model = MotionDiT(tiny_config(start_token_prob=0.5))
    drop = torch.tensor([True, False, False, False])
    torch.manual_seed(0)
    _, use_start = model._masks(4, "cpu", torch.zeros(4, TP, 70), None, drop, augment=False)
    assert torch.equal(use_start, drop)  # not augmenting: exactly the given mask
    starts = torch.stack(
        [model._masks(4, "cpu", torch.zeros(4, TP, 70), None, drop, True)[1] for _ in range(200)]
    )
    assert starts[:, 0].all()  # forced samples always use the start token
    assert 0.35 < starts[:, 1:].float().mean() < 0.65  # the others with start_token_prob
    audio_drop = torch.tensor([True, False, True, False])
    assert torch.equal(model._masks(4, "cpu", None, audio_drop, None, True)[0], audio_drop)  # audio: exact


def test_reference_expression_dropout():
    """Dropped samples read the learned null instead of the reference expression; drawn with
    ref_exp_drop_prob only when augmenting."""
    model = MotionDiT(tiny_config(audio_dropout_prob=0.0, start_token_prob=0.0, ref_exp_drop_prob=0.5)).eval()
    perturb_(model)
    inputs = make_inputs(batch=2)
    other = inputs["id_feat"].clone()
    other[:, REF_EXP] = torch.randn(2, 63)
    drop = torch.tensor([True, False])
    a, b = model(**inputs, ref_drop=drop), model(**dict(inputs, id_feat=other), ref_drop=drop)
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])
    with torch.no_grad():
        model.null_ref_exp.copy_(other[0, REF_EXP])
    kept = model(**dict(inputs, id_feat=other), ref_drop=torch.zeros(2, dtype=torch.bool))
    assert torch.equal(kept[0], model(**dict(inputs, id_feat=other), ref_drop=drop)[0])  # null = that expression
    assert not model._ref_drop_mask(64, "cpu", None, augment=False).any()
    torch.manual_seed(0)
    assert 0.3 < model._ref_drop_mask(400, "cpu", None, augment=True).float().mean() < 0.7
    with pytest.raises(ValueError, match="ref_exp_drop_prob must be in"):
        tiny_config(ref_exp_drop_prob=1.5)


def test_context_noise_only_when_augmenting():
    model = MotionDiT(tiny_config(audio_dropout_prob=0.0, start_token_prob=0.0)).eval()
    perturb_(model)
    inputs = make_inputs(batch=2)
    clean = model(**inputs)
    torch.manual_seed(0)
    noisy = model(**inputs, augment=True)  # σ ~ U[0, 0.1] on the context
    assert not torch.equal(clean, noisy)
    assert (clean - noisy).abs().max() < 1.0  # small perturbation


def test_make_id_feat():
    kp, ref = torch.randn(2, 21, 3), torch.randn(2, 70)
    f = make_id_feat(kp, ref)
    assert f.shape == (2, 133)
    assert torch.equal(f[:, :63], kp.reshape(2, 63)) and torch.equal(f[:, 63:], ref)


def test_gradients_reach_every_parameter_after_perturbation():
    model = MotionDiT(tiny_config())
    perturb_(model)
    model.train()
    inputs = make_inputs(batch=4)
    model(
        **inputs,
        audio_drop=torch.tensor([True, False, False, False]),
        context_drop=torch.tensor([True, False, False, False]),
        ref_drop=torch.tensor([False, True, False, False]),
    ).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    missing.remove("audio_aligner.layer_logits")  # softmax over L = 1 layer has zero gradient
    assert not missing, missing


def test_flops_match_torch_flop_counter():
    model = MotionDiT(tiny_config(aligner_layers=1)).eval()
    inputs = make_inputs(batch=1)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(**inputs)
    counted = counter.get_total_flops()
    ours = model.flops_per_sample(t_window=T, tp=TP)
    assert abs(ours - counted) / counted < 0.01, (ours, counted)
