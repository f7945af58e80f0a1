"""Strategy settings sized from the model (DeepSpeed buckets), MFU accounting, compile and fused AdamW."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import tiny_config

from configs.loader import ConfigError
from models.dit import MotionDiT, count_parameters
from models.motion import MotionStats
from pl_modules.module import MotionDiffusionModule
from pl_modules.strategy import (
    MAX_BUCKET,
    MIN_BUCKET,
    auto_bucket_size,
    deepspeed_bucket_size,
    flop_accounting,
    trainable_model,
)


def test_auto_bucket_is_a_quarter_of_the_trainable_parameters_clamped():
    assert auto_bucket_size(80_000_000) == 20_000_000  # B: four buckets, three overlap backward
    assert auto_bucket_size(1_000_000) == MIN_BUCKET  # tiny: one bucket of at least 10 MB in bf16
    assert auto_bucket_size(10**10) == MAX_BUCKET


@pytest.mark.parametrize("preset", ["S", "B"])
def test_auto_bucket_counts_the_real_models_trainable_parameters(preset):
    cfg = tiny_config(model=preset, **{"trainer.deepspeed_bucket_size": "auto"})
    real = MotionDiT(cfg.model)  # built for real, not on the meta device
    assert deepspeed_bucket_size(cfg) == auto_bucket_size(count_parameters(real, trainable_only=True))
    assert deepspeed_bucket_size(cfg) < count_parameters(real)  # a bucket fills before backward ends


def test_stage_two_buckets_count_only_the_controller():
    cfg = tiny_config(config="stage2.yaml", model="B", **{"stage2.init_from": "unused"})
    model = trainable_model(cfg)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"emotion_controller"}
    assert deepspeed_bucket_size(cfg) == auto_bucket_size(count_parameters(model, trainable_only=True))


def test_bucket_size_given_as_a_number_or_refused_naming_the_key():
    assert deepspeed_bucket_size(tiny_config(**{"trainer.deepspeed_bucket_size": "2e7"})) == 20_000_000
    for bad in ("lots", "1e3"):
        with pytest.raises(ConfigError, match="trainer.deepspeed_bucket_size"):
            tiny_config(**{"trainer.deepspeed_bucket_size": bad})


def test_mfu_counts_the_dit_with_its_aligner_and_says_the_encoder_is_not_counted():
    cfg = tiny_config(model="B")
    f = flop_accounting(cfg)
    model = MotionDiT(cfg.model)
    assert f["mfu_flops_per_window"] == 3 * model.flops_per_sample()
    assert model.flops_per_sample() > model.audio_aligner.flops_per_sample(125) > 0  # aligner included
    assert f["encoder_forward_flops_in_step"] == 0  # log-mel: no weights, negligible FLOPs


def test_compiled_blocks_keep_checkpoint_keys_and_outputs():
    """trainer.compile: the module's state dict (hence Lightning and DeepSpeed checkpoints) is unchanged,
    and a checkpoint of a compiled module loads into an eager one with the same outputs."""
    cfg = tiny_config()
    torch.manual_seed(0)
    eager = MotionDiffusionModule(cfg, MotionStats.identity())
    eager.configure_model()
    compiled = MotionDiT(cfg.model)
    compiled.compile_blocks(backend="eager")  # the wrapping, without a C++ toolchain or minutes of compile
    compiled.load_state_dict(eager.model.state_dict())  # strict: same names
    assert list(compiled.state_dict()) == list(eager.model.state_dict())
    x_t, t = torch.randn(2, 100, 70), torch.tensor([3, 700])
    cond = eager.condition({"motion": torch.randn(2, 125, 70), "audio": torch.randn(2, 125 * 640) * 0.1,
                            "kp": torch.randn(2, 21, 3), "ref_motion": torch.randn(2, 70)})
    eager.model.eval(), compiled.eval()
    assert torch.allclose(compiled(x_t, t, cond), eager.model(x_t, t, cond), atol=1e-6)
    module = MotionDiffusionModule(tiny_config(**{"trainer.compile": "true"}), MotionStats.identity())
    module.configure_model()
    assert all(hasattr(b, "_compiled_call_impl") and b._compiled_call_impl is not None for b in module.model.blocks)


def test_fused_adamw_is_configurable_and_on_by_default():
    assert tiny_config().optim.fused is True
    for flag, want in (("false", None), ("true", True)):
        module = MotionDiffusionModule(tiny_config(**{"optim.fused": flag}), MotionStats.identity())
        module.configure_model()
        assert module.configure_optimizers()["optimizer"].defaults["fused"] is want
