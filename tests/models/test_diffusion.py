"""Diffusion: schedules, q_sample, loss, DDIM/DDPM with an oracle, CFG, windowed generation."""

from __future__ import annotations

import pytest
import torch
from _model_helpers import TP, T, make_inputs, perturb_, tiny_config
from torch import nn

from models.diffusion import (
    DiffusionConfig,
    NoiseSchedule,
    SamplerSettings,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    generate_windowed,
    guided_eps,
    training_loss,
)
from models.dit import Condition, Drops, MotionDiT


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule.from_config(DiffusionConfig(prediction="eps"))  # the Oracle outputs ε


class Oracle(nn.Module):
    """Knows x0, hence the exact ε of any x_t."""

    def __init__(self, x0: torch.Tensor, schedule: NoiseSchedule):
        super().__init__()
        self.x0, self.schedule = x0, schedule

    def forward(self, x_t, t, cond=None, drops=None):
        ab = self.schedule.gather("alphas_cumprod", t, x_t)
        return (x_t - ab.sqrt() * self.x0) / (1 - ab).sqrt()


def test_linear_schedule_endpoints(schedule):
    assert schedule.num_timesteps == 1000
    assert schedule.betas[0].item() == pytest.approx(1e-4)
    assert schedule.betas[-1].item() == pytest.approx(0.02)
    assert (schedule.alphas_cumprod.diff() < 0).all()
    assert schedule.alphas_cumprod[-1] < 1e-4  # x_N is (almost) pure noise


def test_cosine_schedule():
    s = NoiseSchedule.from_config(DiffusionConfig(schedule="cosine"))
    ab = s.alphas_cumprod
    assert (ab.diff() < 0).all() and ab[0] > 0.999 and ab[-1] < 1e-4
    assert (s.betas <= 0.999).all()


def test_config_validation():
    with pytest.raises(ValueError, match="schedule 'sigmoid'"):
        DiffusionConfig(schedule="sigmoid")
    with pytest.raises(ValueError, match="sampling_steps 2000"):
        DiffusionConfig(sampling_steps=2000)


def test_q_sample_statistics(schedule):
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((4, 20_000, 1), 2.0)
    t = torch.tensor([0, 100, 500, 999])
    x_t = schedule.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    ab = schedule.alphas_cumprod[t].float()
    torch.testing.assert_close(x_t.mean(dim=(1, 2)), 2.0 * ab.sqrt(), atol=0.03, rtol=0)
    torch.testing.assert_close(x_t.std(dim=(1, 2)), (1 - ab).sqrt(), atol=0.03, rtol=0.03)


def test_q_sample_is_float32_for_a_bf16_batch(schedule):
    """Under DeepSpeed bf16 the batch arrives in bf16; the noise scale must still be √(1−ᾱ_t) at every t."""
    t = torch.arange(schedule.num_timesteps)
    x0 = torch.zeros(len(t), 3, 70, dtype=torch.bfloat16)
    noise = torch.ones(x0.shape)  # float32, as training_loss draws it
    x_t = schedule.q_sample(x0, t, noise)
    assert x_t.dtype == torch.float32
    want = (1 - schedule.alphas_cumprod).sqrt()  # float64 (N,)
    scale = x_t[:, 0, 0].double()
    assert ((scale - want).abs() / want).max() < 0.01
    # What computing in the batch's dtype gives: ᾱ_0 rounds to 1 in bf16, so t = 0 gets no noise at all.
    ab_bf16 = schedule.gather("alphas_cumprod", t, x0)
    assert ab_bf16.dtype == torch.bfloat16 and (1 - ab_bf16[0]).sqrt().item() == 0.0
    naive = (1 - ab_bf16).sqrt().flatten().double()
    assert ((naive - want).abs() / want).max() > 0.3


def test_training_loss_feeds_the_model_x_t_computed_in_float32(schedule):
    seen = {}

    def model(x_t, t, cond, drops):
        seen["x_t"] = x_t
        return torch.zeros_like(x_t)

    x0 = torch.randn(2, T, 70).to(torch.bfloat16)
    t, noise = torch.tensor([0, 3]), torch.randn(2, T, 70)
    out = training_loss(model, schedule, x0, None, t=t, noise=noise)
    assert seen["x_t"].dtype == torch.bfloat16  # the model gets the batch's dtype
    want = schedule.q_sample(x0.double(), t, noise.double())
    torch.testing.assert_close(seen["x_t"].double(), want, atol=0, rtol=2**-8)  # one bf16 rounding of x_t
    torch.testing.assert_close(out["loss"], noise.square().mean())  # the target is the float32 noise


def test_ddim_timesteps():
    ts = ddim_timesteps(1000, 50)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0 and (ts.diff() < 0).all()


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_with_exact_eps_recovers_x0(schedule, eta):
    x0 = torch.randn(2, T, 70, generator=torch.Generator().manual_seed(1))
    oracle = Oracle(x0, schedule)
    out = ddim_sample(
        lambda x, t: oracle(x, t),
        schedule,
        x0.shape,
        steps=20,
        eta=eta,
        generator=torch.Generator().manual_seed(2),
    )
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)


def test_ddpm_with_exact_eps_recovers_x0(schedule):
    x0 = torch.randn(2, 5, 70, generator=torch.Generator().manual_seed(1))
    oracle = Oracle(x0, schedule)
    out = ddpm_sample(
        lambda x, t: oracle(x, t), schedule, x0.shape, generator=torch.Generator().manual_seed(2)
    )
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)


def test_training_loss(schedule):
    x0 = torch.randn(3, T, 70)
    _, _, cond = make_inputs(batch=3)
    out = training_loss(Oracle(x0, schedule), schedule, x0, cond)
    assert out["loss"].item() < 1e-8 and out["t"].shape == (3,)
    model = MotionDiT(tiny_config())  # zero output at init ⇒ loss = E[ε²] ≈ 1
    out = training_loss(model, schedule, x0, cond, t=torch.tensor([1, 500, 999]))
    assert 0.7 < out["loss"].item() < 1.3
    assert set(out) == {"loss", "mse_exp", "mse_pose", "velocity", "acceleration", "t"}
    out["loss"].backward()
    assert model.exp_mlp[-1].weight.grad.abs().sum() > 0


class PredictionOracle(nn.Module):
    """Knows x0: outputs the exact ε, v or x_0 of any x_t, whichever the schedule's network predicts."""

    def __init__(self, x0: torch.Tensor, schedule: NoiseSchedule):
        super().__init__()
        self.x0, self.schedule = x0, schedule

    def forward(self, x_t, t, cond=None, drops=None):
        ab = self.schedule.gather("alphas_cumprod", t, x_t)
        eps = (x_t - ab.sqrt() * self.x0) / (1 - ab).sqrt()
        return self.schedule.target(self.x0, t, eps)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_every_prediction_trains_and_samples_consistently(prediction):
    s = NoiseSchedule.from_config(DiffusionConfig(prediction=prediction))
    x0 = torch.randn(3, T, 70, generator=torch.Generator().manual_seed(1))
    oracle = PredictionOracle(x0, s)
    out = training_loss(oracle, s, x0, None, velocity_weight=1.0, acceleration_weight=4.0)
    assert out["loss"].item() < 1e-8 and out["velocity"].item() < 1e-8
    eps_fn = lambda x, t: s.output_to_eps(x, t, oracle(x, t))  # noqa: E731  (what `sample` does)
    got = ddim_sample(eps_fn, s, x0.shape, steps=20, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(got, x0, atol=1e-4, rtol=1e-4)
    t = torch.tensor([0, 400, 999])
    x_t = s.q_sample(x0, t, torch.randn(x0.shape))
    torch.testing.assert_close(s.output_to_x0(x_t, t, oracle(x_t, t)), x0, atol=1e-3, rtol=1e-3)


def test_temporal_losses_measure_frame_to_frame_error():
    """An x_0-predictor off by ±c alternating frame to frame: Δ error 2c, Δ² error 4c, exactly."""
    s = NoiseSchedule.from_config(DiffusionConfig(prediction="x0"))
    x0, c = torch.randn(2, T, 70), 0.1
    wobble = c * (-1.0) ** torch.arange(T)[None, :, None]  # (1, T, 1)
    model = lambda x_t, t, cond, drops: x0 + wobble  # noqa: E731
    out = training_loss(model, s, x0, None, velocity_weight=2.0, acceleration_weight=3.0)
    assert out["velocity"].item() == pytest.approx(4 * c**2, rel=1e-4)
    assert out["acceleration"].item() == pytest.approx(16 * c**2, rel=1e-4)
    assert out["loss"].item() == pytest.approx(c**2 + 2.0 * 4 * c**2 + 3.0 * 16 * c**2, rel=1e-4)
    # ε-prediction: x̂_0's error is ε̂'s times √((1−ᾱ)/ᾱ); the terms are weighted by ᾱ, leaving (1−ᾱ)·4c².
    s_eps, t = NoiseSchedule.from_config(DiffusionConfig(prediction="eps")), torch.tensor([300, 300])
    noise = torch.randn(x0.shape)
    out = training_loss(lambda x_t, t, cond, drops: noise + wobble, s_eps, x0, None, t=t, noise=noise)
    ab = s_eps.alphas_cumprod[300].item()
    assert out["velocity"].item() == pytest.approx((1 - ab) * 4 * c**2, rel=1e-3)
    assert out["loss"].item() == pytest.approx(c**2, rel=1e-4)  # weights 0: the MSE alone


def test_cfg_rescale_matches_the_conditional_std():
    torch.manual_seed(0)
    model = MotionDiT(tiny_config()).eval()
    perturb_(model)
    x_t, t, cond = make_inputs(batch=2)
    e_cond = model(x_t, t, cond, Drops(audio=torch.tensor([False, False])))
    plain = guided_eps(model, x_t, t, cond, w_a=3.0)
    full = guided_eps(model, x_t, t, cond, w_a=3.0, cfg_rescale=1.0)
    half = guided_eps(model, x_t, t, cond, w_a=3.0, cfg_rescale=0.5)
    torch.testing.assert_close(full.std(dim=(1, 2)), e_cond.std(dim=(1, 2)), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(plain.std(dim=(1, 2)), e_cond.std(dim=(1, 2)), rtol=1e-2)
    torch.testing.assert_close(half, 0.5 * (plain + full), atol=1e-5, rtol=1e-5)


def test_new_diffusion_fields_are_validated():
    with pytest.raises(ValueError, match="prediction 'velocity' is not one of"):
        DiffusionConfig(prediction="velocity")
    with pytest.raises(ValueError, match="acceleration_weight must be ≥ 0"):
        DiffusionConfig(acceleration_weight=-1.0)
    with pytest.raises(ValueError, match="cfg_rescale must be in"):
        DiffusionConfig(cfg_rescale=1.5)


class CountingModel(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


def test_audio_cfg_equals_two_separate_forwards():
    torch.manual_seed(0)
    model = MotionDiT(tiny_config()).eval()
    perturb_(model)
    x_t, t, cond = make_inputs(batch=2)
    counting = CountingModel(model)
    eps = guided_eps(counting, x_t, t, cond, w_a=1.5)
    assert counting.calls == 1  # both passes in one batched forward
    e_null = model(x_t, t, cond, Drops(audio=torch.tensor([True, True])))
    e_audio = model(x_t, t, cond, Drops(audio=torch.tensor([False, False])))
    torch.testing.assert_close(eps, e_null + 1.5 * (e_audio - e_null), atol=1e-5, rtol=1e-5)


class RecordingStub(nn.Module):
    """Stands in for MotionDiT: ε depends on x_t and the audio; records every call's context/audio."""

    def __init__(self):
        super().__init__()
        self.calls: list[dict] = []

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition, drops: Drops) -> torch.Tensor:
        self.calls.append({"context": cond.context, "audio": cond.audio, "batch": x_t.shape[0]})
        a = cond.audio[:, -x_t.shape[1] :].mean(dim=(2, 3))[..., None]  # (B, T, 1): window audio
        return 0.5 * x_t + a * (~drops.audio)[:, None, None]


def test_windowed_generation_returns_n_frames_and_chains_contexts(schedule):
    b, n, steps = 2, 2 * T + 5, 4  # N not a multiple of T ⇒ 3 windows, the last one padded
    audio = torch.randn(b, n, 1, 16, generator=torch.Generator().manual_seed(0))
    id_feat = torch.randn(b, 133)
    stub = RecordingStub()
    windows = []
    out = generate_windowed(
        stub,
        schedule,
        audio,
        id_feat,
        t_window=T,
        tp=TP,
        settings=SamplerSettings(steps=steps, w_a=1.5),
        generator=torch.Generator().manual_seed(1),
        on_window=lambda k, w: windows.append(w),
    )
    assert out.shape == (b, n, 70)
    assert len(windows) == 3 and len(stub.calls) == 3 * steps
    torch.testing.assert_close(out, torch.cat(windows, dim=1)[:, :n])
    for k in range(3):
        first = stub.calls[k * steps]
        assert first["batch"] == 2 * b  # audio CFG: (∅, a) in one batch
        if k == 0:
            assert first["context"] is None and first["audio"].shape[1] == T
        else:
            assert first["audio"].shape[1] == TP + T
            expected = windows[k - 1][:, -TP:]  # the previous window's last Tp generated frames
            assert torch.equal(first["context"][:b], expected)
            torch.testing.assert_close(first["audio"][:b, :TP], audio[:, k * T - TP : k * T])


def test_windowed_generation_short_audio(schedule):
    audio = torch.randn(1, 7, 1, 16)
    two = SamplerSettings(steps=2)
    out = generate_windowed(RecordingStub(), schedule, audio, torch.randn(1, 133), T, TP, two)
    assert out.shape == (1, 7, 70)
    with pytest.raises(ValueError, match="num_frames 8"):
        generate_windowed(RecordingStub(), schedule, audio, torch.randn(1, 133), T, TP, two, num_frames=8)


def test_per_sample_generators_make_a_clip_independent_of_its_batch(schedule):
    """Noise drawn row by row from per-clip generators: clip 1 alone equals clip 1 in a batch of 3."""
    torch.manual_seed(0)
    model = MotionDiT(tiny_config()).eval()
    perturb_(model)
    audio, id_feat = torch.randn(3, T, 1, 16), torch.randn(3, 133)
    settings = SamplerSettings(steps=3, eta=1.0)
    gens = [torch.Generator().manual_seed(s) for s in (10, 11, 12)]
    batch = generate_windowed(model, schedule, audio, id_feat, T, TP, settings, generator=gens)
    alone = generate_windowed(model, schedule, audio[1:2], id_feat[1:2], T, TP, settings,
                              generator=[torch.Generator().manual_seed(11)])
    torch.testing.assert_close(batch[1:2], alone, atol=1e-3, rtol=1e-3)  # batched matmuls: float round-off only
