"""Emotion controller: identity at init, pose independence, nested CFG, freezing, condition drops."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from _model_helpers import TP, T, make_inputs, perturb_, tiny_config

from models.diffusion import (
    DiffusionConfig,
    NoiseSchedule,
    SamplerSettings,
    generate_windowed,
    guided_eps,
    training_loss,
)
from models.dit import REF_EXP, Drops, MotionDiT
from models.emotion import (
    CONTROLLER_PREFIX,
    EMOTIONS,
    NULL_EMOTION,
    EmotionControllerConfig,
    build_emotion_controller,
    freeze_stage_one,
    stage_two_condition_drop,
)

ROOT = Path(__file__).resolve().parents[2]


def stage_two_model(perturb_controller: bool = False) -> MotionDiT:
    torch.manual_seed(0)
    model = MotionDiT(tiny_config()).eval()
    perturb_(model)  # a "trained" stage-one model: non-zero gates and heads
    controller = build_emotion_controller(EmotionControllerConfig(), model.config)
    if perturb_controller:
        perturb_(controller, std=0.2, seed=1)
    model.attach_emotion_controller(controller.eval())
    return model


def test_labels():
    assert EMOTIONS == ("neutral", "angry", "disgusted", "contempt", "fear", "happy", "sad", "surprised")
    assert NULL_EMOTION == 8


@pytest.mark.parametrize("drop_ref", [True, False])
def test_controller_at_init_reproduces_stage_one_bit_for_bit(drop_ref):
    """Stage two starts at stage one as run without (default) or with the reference expression."""
    torch.manual_seed(0)
    model = MotionDiT(tiny_config()).eval()
    perturb_(model)
    x, t, cond = make_inputs(batch=3)
    before = model(x, t, cond, Drops(ref_exp=torch.full((3,), drop_ref)))
    ctrl = EmotionControllerConfig(drop_reference_expression=drop_ref)
    model.attach_emotion_controller(build_emotion_controller(ctrl, model.config))
    assert not torch.equal(before, torch.zeros_like(before))
    for labels in (torch.tensor([0, 5, 8]), None):
        assert torch.equal(model(x, t, replace(cond, emotion=labels)), before)


def test_stage_two_ignores_the_reference_expression_only():
    """The reference frame shows its clip's emotion: a stage-two model must not read it (but still
    reads x_c and the rest of the reference motion)."""
    model = stage_two_model(perturb_controller=True)
    x, t, cond = make_inputs(batch=2)
    cond.emotion = torch.tensor([1, 5])
    out = model(x, t, cond)
    other_exp = cond.id_feat.clone()
    other_exp[:, REF_EXP] += 1.0  # another reference expression
    assert torch.equal(model(x, t, replace(cond, id_feat=other_exp)), out)
    other_kp = cond.id_feat.clone()
    other_kp[:, :63] += 1.0  # another identity
    assert not torch.allclose(model(x, t, replace(cond, id_feat=other_kp)), out)
    kept = model(x, t, replace(cond, id_feat=other_exp), Drops(ref_exp=torch.zeros(2, dtype=torch.bool)))
    assert not torch.allclose(kept, out)  # an explicit mask overrides the rule


def test_pose_never_depends_on_emotion():
    model = stage_two_model(perturb_controller=True)
    x, t, cond = make_inputs(batch=2)
    outs = [model(x, t, replace(cond, emotion=torch.full((2,), e))) for e in range(NULL_EMOTION + 1)]
    for out in outs[1:]:
        assert torch.equal(out[..., 63:], outs[0][..., 63:])  # pose head reads the trunk only
    assert not torch.allclose(outs[1][..., :63], outs[5][..., :63])  # expression does change


def test_emotion_without_controller_and_bad_labels_raise():
    model = MotionDiT(tiny_config()).eval()
    x, t, cond = make_inputs(batch=2)
    with pytest.raises(ValueError, match="no emotion controller"):
        model(x, t, replace(cond, emotion=torch.tensor([1, 2])))
    model = stage_two_model()
    with pytest.raises(ValueError, match=r"labels in \[0, 8\]"):
        model(x, t, replace(cond, emotion=torch.tensor([1, 9])))
    with pytest.raises(ValueError, match="must equal the DiT width"):
        build_emotion_controller(EmotionControllerConfig(width=32), model.config)


def test_nested_cfg_equals_three_separate_forwards():
    model = stage_two_model(perturb_controller=True)
    x_t, t, cond = make_inputs(batch=2)
    emotion = torch.tensor([1, 6])
    calls = []
    model.register_forward_hook(lambda m, args, kwargs, out: calls.append(out.shape[0]), with_kwargs=True)
    eps = guided_eps(model, x_t, t, replace(cond, emotion=emotion), w_a=1.5, w_e=2.0)
    assert calls == [6]  # the three passes in one batched forward
    drop, keep, null = (
        torch.tensor([True, True]),
        torch.tensor([False, False]),
        torch.full((2,), NULL_EMOTION),
    )
    e00 = model(x_t, t, replace(cond, emotion=null), Drops(audio=drop))
    ea0 = model(x_t, t, replace(cond, emotion=null), Drops(audio=keep))
    eae = model(x_t, t, replace(cond, emotion=emotion), Drops(audio=keep))
    torch.testing.assert_close(eps, e00 + 1.5 * (ea0 - e00) + 2.0 * (eae - ea0), atol=1e-4, rtol=1e-4)


def test_nested_cfg_windowed_generation_runs():
    model = stage_two_model(perturb_controller=True)
    schedule = NoiseSchedule.from_config(DiffusionConfig())
    n = T + 3
    out = generate_windowed(
        model,
        schedule,
        torch.randn(2, n, 1, 16),
        torch.randn(2, 133),
        t_window=T,
        tp=TP,
        settings=SamplerSettings(steps=3, w_a=1.5, w_e=1.5),
        emotion=torch.tensor([2, 5]),
    )
    assert out.shape == (2, n, 70) and torch.isfinite(out).all()


def test_stage_two_condition_drop_proportions():
    emotion = torch.randint(0, 8, (20_000,), generator=torch.Generator().manual_seed(0))
    audio_drop, emo = stage_two_condition_drop(emotion, 0.1, 0.1, generator=torch.Generator().manual_seed(1))
    null = emo == NULL_EMOTION
    assert abs(audio_drop.float().mean() - 0.1) < 0.01  # (∅, ∅)
    assert abs((null & ~audio_drop).float().mean() - 0.1) < 0.01  # (a, ∅)
    assert not (audio_drop & ~null).any()  # audio is never dropped while the emotion is kept
    assert torch.equal(emo[~null], emotion[~null])


@pytest.mark.parametrize("train_exp_head", [False, True])
def test_freeze_stage_one_keeps_stage_one_weights_bit_identical(train_exp_head):
    model = stage_two_model()
    trainable = freeze_stage_one(model, train_exp_head=train_exp_head)
    prefixes = (CONTROLLER_PREFIX, "exp_mlp.") if train_exp_head else (CONTROLLER_PREFIX,)
    assert trainable and all(name.startswith(prefixes) for name in trainable)
    frozen_before = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    ctrl_before = {n: p.clone() for n, p in model.named_parameters() if n.startswith(CONTROLLER_PREFIX)}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    schedule = NoiseSchedule.from_config(DiffusionConfig())
    model.emotion_controller.train()  # frozen trunk stays in eval mode, augment=True
    for step in range(3):
        x, _, cond = make_inputs(batch=4, seed=step)
        audio_drop, cond.emotion = stage_two_condition_drop(torch.randint(0, 8, (4,)))
        loss = training_loss(model, schedule, x, cond, Drops(audio=audio_drop, augment=True))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in model.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), n
    assert any(not torch.equal(p, ctrl_before[n]) for n, p in model.named_parameters() if n in ctrl_before)


def test_stage_one_checkpoint_loads_strictly_before_attaching():
    stage_one = MotionDiT(tiny_config())
    model = MotionDiT(tiny_config())
    model.load_state_dict(stage_one.state_dict(), strict=True)
    model.attach_emotion_controller(build_emotion_controller(EmotionControllerConfig(), model.config))
    missing, unexpected = model.load_state_dict(stage_one.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(CONTROLLER_PREFIX) for k in missing)


def test_models_import_without_lightning():
    code = (
        "import sys; import models.dit, models.diffusion, models.emotion, models.aligner, models.conformer; "
        "assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules, "
        "sorted(m for m in sys.modules if 'lightning' in m)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
