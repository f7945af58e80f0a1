"""State dicts equal the public manifest; real-format checkpoints load strictly; errors name keys."""

from __future__ import annotations

import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from _lp_helpers import MANIFEST_NAMES

from models.liveportrait import CHECKPOINT_FILES, FaceModelConfig, build_face_model, load_face_model
from models.liveportrait.loading import load_module_weights, resolve_base_models
from models.weights import WeightsError, read_state_dict


@pytest.fixture(scope="module")
def full_random():
    torch.manual_seed(0)
    return build_face_model()


@pytest.mark.parametrize("attr", list(MANIFEST_NAMES))
def test_state_dict_equals_manifest(full_random, manifest, attr):
    entry = manifest["modules"][MANIFEST_NAMES[attr]]
    module = getattr(full_random, attr)
    expected = [(e["key"], tuple(e["shape"]), e["dtype"]) for e in entry["state_dict"]]
    got = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()]
    assert got == expected  # same keys, same order, same shapes and dtypes
    assert sum(p.numel() for p in module.parameters()) == entry["counts"]["parameters"]
    assert sum(b.numel() for b in module.buffers()) == entry["counts"]["buffers"]


def test_constructor_defaults_are_public(manifest):
    cfg = FaceModelConfig()
    a = manifest["modules"]["appearance_feature_extractor"]["constructor_params"]
    assert {k: getattr(cfg.appearance, k) for k in a} == a
    w = manifest["modules"]["warping_module"]["constructor_params"]
    dm = w.pop("dense_motion_params")
    assert {k: getattr(cfg.warping, k) for k in w} == w
    assert {k: getattr(cfg.warping.dense_motion, k) for k in dm} == dm
    g = manifest["modules"]["spade_generator"]["constructor_params"]
    assert {k: getattr(cfg.generator, k) for k in g} == g
    m = manifest["modules"]["motion_extractor"]["constructor_params"]
    assert (cfg.motion.num_kp, cfg.motion.backbone) == (m["num_kp"], m["backbone"])
    eff = manifest["modules"]["motion_extractor"]["effective_params"]
    assert list(cfg.motion.depths) == eff["depths"] and list(cfg.motion.dims) == eff["dims"]


@pytest.mark.slow  # writes and loads the four public-size files (about 500 MB)
def test_full_checkpoints_load_strict(full_weights_dir, full_model):
    base = resolve_base_models(full_weights_dir)
    assert base == full_weights_dir / "liveportrait" / "base_models"
    for attr, fname in CHECKPOINT_FILES.items():
        sd = torch.load(base / fname, map_location="cpu", weights_only=True)
        mine = getattr(full_model, attr).state_dict()
        assert list(sd) == list(mine)
        assert all(torch.equal(sd[k], mine[k]) for k in sd)
    assert not any(p.requires_grad for p in full_model.parameters())
    assert not full_model.training


def test_random_weights_are_deterministic(tmp_path, tiny_weights_dir):
    from models.liveportrait.testing import write_random_weights

    again = write_random_weights(tmp_path, seed=0, cfg="tiny")
    other = write_random_weights(tmp_path / "s1", seed=1, cfg="tiny")
    for fname in CHECKPOINT_FILES.values():
        a, b = read_state_dict(tiny_weights_dir / "base_models" / fname, "test"), read_state_dict(again / fname, "test")
        assert all(torch.equal(a[k], b[k]) for k in a)
    c = read_state_dict(other / CHECKPOINT_FILES["motion_extractor"], "test")
    a = read_state_dict(again / CHECKPOINT_FILES["motion_extractor"], "test")
    assert not torch.equal(a["detector.fc_kp.weight"], c["detector.fc_kp.weight"])


def _copy_base(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "base_models", dst / "base_models")
    return dst / "base_models"


def test_renamed_key_fails_naming_it(tmp_path, tiny_weights_dir, tiny_cfg):
    base = _copy_base(tiny_weights_dir, tmp_path)
    path = base / CHECKPOINT_FILES["warping_module"]
    sd = torch.load(path, weights_only=True)
    sd = OrderedDict(("third.conv.wrong" if k == "third.conv.weight" else k, v) for k, v in sd.items())
    torch.save(sd, path)
    with pytest.raises(WeightsError) as err:
        load_face_model(tmp_path, cfg=tiny_cfg)
    msg = str(err.value)
    assert "third.conv.weight" in msg and "third.conv.wrong" in msg and str(path) in msg


def test_renamed_spectral_norm_buffer_fails_naming_it(tmp_path, tiny_weights_dir, tiny_cfg):
    base = _copy_base(tiny_weights_dir, tmp_path)
    path = base / CHECKPOINT_FILES["spade_generator"]
    sd = torch.load(path, weights_only=True)
    sd["up_0.conv_s.weight_vv"] = sd.pop("up_0.conv_s.weight_v")
    torch.save(sd, path)
    with pytest.raises(WeightsError, match="up_0.conv_s.weight_v"):
        load_face_model(tmp_path, cfg=tiny_cfg)


def test_module_prefix_is_stripped(tmp_path, tiny_weights_dir, tiny_cfg, tiny_model):
    base = _copy_base(tiny_weights_dir, tmp_path)
    for fname in CHECKPOINT_FILES.values():
        sd = torch.load(base / fname, weights_only=True)
        torch.save(OrderedDict((f"module.{k}", v) for k, v in sd.items()), base / fname)
    model = load_face_model(base, cfg=tiny_cfg)  # the base_models folder itself is accepted too
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_shape_mismatch_and_wrong_config_fail(tiny_weights_dir):
    module = build_face_model().warping_module  # full size vs tiny file
    with pytest.raises(ValueError, match="shape mismatch"):
        load_module_weights(module, tiny_weights_dir / "base_models" / CHECKPOINT_FILES["warping_module"])


def test_missing_file_names_file_and_layout(tmp_path, tiny_weights_dir):
    base = _copy_base(tiny_weights_dir, tmp_path)
    (base / "spade_generator.pth").unlink()
    with pytest.raises(FileNotFoundError, match="spade_generator.pth") as err:
        load_face_model(tmp_path)
    assert "base_models" in str(err.value)
    with pytest.raises(FileNotFoundError, match="no LivePortrait checkpoint"):
        load_face_model(tmp_path / "nowhere")
