"""MotionDiT: shapes, zero-init, CFG null audio, start token, determinism, presets, FLOPs."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from _model_helpers import TP, T, make_inputs, perturb_, tiny_config
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from models.dit import PRESETS, REF_EXP, Drops, MotionDiT, MotionDiTConfig, count_parameters, make_id_feat


def test_output_shape_and_zero_at_init(tiny_dit):
    x, t, cond = make_inputs(batch=3)
    eps = tiny_dit(x, t, cond)
    assert eps.shape == (3, T, 70)
    assert torch.equal(eps, torch.zeros_like(eps))  # zero-initialised output layers


def test_first_window_accepts_window_only_audio(tiny_dit):
    x, t, cond = make_inputs(batch=2, with_context=False)
    cond.audio = cond.audio[:, TP:]  # (B, T, L, C): no audio before the first window
    assert tiny_dit(x, t, cond).shape == (2, T, 70)


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
    x, t, cond = make_inputs(batch=2)
    cond.audio = cond.audio[:, TP:]  # window-only audio but a context is given
    with pytest.raises(ValueError, match=r"audio has shape \(2, 12, 1, 16\)"):
        tiny_dit(x, t, cond)


def test_null_audio_used_when_dropped():
    model = MotionDiT(tiny_config()).eval()
    perturb_(model)
    x, t, a = make_inputs(batch=2, seed=1)
    b = replace(a, audio=torch.randn_like(a.audio))
    drop = Drops(audio=torch.tensor([True, True]))
    # Dropped audio ⇒ output independent of the audio features.
    assert torch.equal(model(x, t, a, drop), model(x, t, b, drop))
    assert not torch.allclose(model(x, t, a), model(x, t, b))
    # Dropped audio is the learned null embedding: changing it changes the dropped output only.
    ref_kept, ref_drop = model(x, t, a), model(x, t, a, drop)
    with torch.no_grad():
        model.null_audio.add_(1.0)
    assert torch.equal(model(x, t, a), ref_kept)
    assert not torch.allclose(model(x, t, a, drop), ref_drop)
    # Per-sample mask: only sample 0 is dropped.
    mixed = model(x, t, a, Drops(audio=torch.tensor([True, False])))
    assert torch.equal(mixed[1], model(x, t, a)[1])


def test_start_token_used_when_context_is_none():
    model = MotionDiT(tiny_config()).eval()
    perturb_(model)
    x, t, cond = make_inputs(batch=2)
    no_ctx = model(x, t, replace(cond, context=None))
    forced = model(x, t, cond, Drops(context=torch.tensor([True, True])))
    assert torch.equal(no_ctx, forced)  # start token ≡ no context, whatever the context holds
    assert not torch.allclose(no_ctx, model(x, t, cond))
    with torch.no_grad():
        model.start_motion.add_(1.0)
    assert not torch.allclose(no_ctx, model(x, t, replace(cond, context=None)))
    # The start token also hides context audio, so window-only and full audio agree.
    full = model(x, t, replace(cond, context=None))
    window_only = model(x, t, replace(cond, context=None, audio=cond.audio[:, TP:]))
    torch.testing.assert_close(full, window_only, atol=1e-5, rtol=1e-4)


def test_training_randomness_is_seeded_and_switchable():
    model = MotionDiT(tiny_config(dropout=0.1))
    perturb_(model)
    model.train()
    x, t, cond = make_inputs(batch=4)
    torch.manual_seed(7)
    y1 = model(x, t, cond)
    torch.manual_seed(7)
    y2 = model(x, t, cond)
    assert torch.equal(y1, y2)
    y3 = model(x, t, cond)  # fresh randomness (dropout, drops, context noise)
    assert not torch.equal(y1, y3)
    model.eval()
    assert torch.equal(model(x, t, cond), model(x, t, cond))  # eval: deterministic, no augmentation
    torch.manual_seed(0)
    a = model(x, t, cond, Drops(augment=True))
    assert not torch.equal(a, model(x, t, cond))


def test_context_drop_is_forced_and_augmented_on_top():
    model = MotionDiT(tiny_config(start_token_prob=0.5))
    drop = torch.tensor([True, False, False, False])
    torch.manual_seed(0)
    _, use_start, _ = model._masks(4, torch.device("cpu"), True, Drops(context=drop), augment=False)
    assert torch.equal(use_start, drop)  # not augmenting: exactly the given mask
    starts = torch.stack([model._masks(4, torch.device("cpu"), True, Drops(context=drop), True)[1] for _ in range(200)])
    assert starts[:, 0].all()  # forced samples always use the start token
    assert 0.35 < starts[:, 1:].float().mean() < 0.65  # the others with start_token_prob
    audio_drop = torch.tensor([True, False, True, False])
    forced = model._masks(4, torch.device("cpu"), False, Drops(audio=audio_drop), True)
    assert torch.equal(forced[0], audio_drop)  # audio: exactly the given mask
    assert forced[1].all()  # no context: every sample uses the start token


def test_reference_expression_dropout():
    """Dropped samples read the learned null instead of the reference expression; drawn with
    ref_exp_drop_prob only when augmenting."""
    model = MotionDiT(tiny_config(audio_dropout_prob=0.0, start_token_prob=0.0, ref_exp_drop_prob=0.5)).eval()
    perturb_(model)
    x, t, cond = make_inputs(batch=2)
    other = cond.id_feat.clone()
    other[:, REF_EXP] = torch.randn(2, 63)
    drop = Drops(ref_exp=torch.tensor([True, False]))
    a, b = model(x, t, cond, drop), model(x, t, replace(cond, id_feat=other), drop)
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])
    with torch.no_grad():
        model.null_ref_exp.copy_(other[0, REF_EXP])
    kept = model(x, t, replace(cond, id_feat=other), Drops(ref_exp=torch.zeros(2, dtype=torch.bool)))
    assert torch.equal(kept[0], model(x, t, replace(cond, id_feat=other), drop)[0])  # null = that expression
    cpu = torch.device("cpu")
    assert not model._masks(64, cpu, True, Drops(), augment=False)[2].any()
    torch.manual_seed(0)
    assert 0.3 < model._masks(400, cpu, True, Drops(), augment=True)[2].float().mean() < 0.7
    with pytest.raises(ValueError, match="ref_exp_drop_prob must be in"):
        tiny_config(ref_exp_drop_prob=1.5)


def test_context_noise_only_when_augmenting():
    model = MotionDiT(tiny_config(audio_dropout_prob=0.0, start_token_prob=0.0)).eval()
    perturb_(model)
    x, t, cond = make_inputs(batch=2)
    clean = model(x, t, cond)
    torch.manual_seed(0)
    noisy = model(x, t, cond, Drops(augment=True))  # σ ~ U[0, 0.1] on the context
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
    x, t, cond = make_inputs(batch=4)
    drops = Drops(
        audio=torch.tensor([True, False, False, False]),
        context=torch.tensor([True, False, False, False]),
        ref_exp=torch.tensor([False, True, False, False]),
    )
    model(x, t, cond, drops).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    missing.remove("audio_aligner.layer_logits")  # softmax over L = 1 layer has zero gradient
    assert not missing, missing


def test_flops_match_torch_flop_counter():
    model = MotionDiT(tiny_config(aligner_layers=1)).eval()
    x, t, cond = make_inputs(batch=1)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, t, cond)
    counted = counter.get_total_flops()
    ours = model.flops_per_sample(t_window=T, tp=TP)
    assert abs(ours - counted) / counted < 0.01, (ours, counted)
