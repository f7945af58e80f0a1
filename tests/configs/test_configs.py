"""Configs: every YAML loads; bad keys, types, values and combinations fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.loader import ConfigError, load_config, load_experiment
from configs.schema import ExperimentConfig

ROOT = Path(__file__).resolve().parents[2] / "configs"
DATA = ["data.train_shards=[x]"]


@pytest.fixture(autouse=True)
def data_root(monkeypatch):
    """The real-data groups name their shards under $DATA_ROOT."""
    monkeypatch.setenv("DATA_ROOT", "/data")


NEEDS = {"stage0.yaml": ["stage0.face_model_dir=w", "stage0.vgg_weights=v"], "stage2.yaml": ["stage2.init_from=ckpt"]}


@pytest.mark.parametrize("experiment", ["stage0.yaml", "stage1.yaml", "stage2.yaml"])
@pytest.mark.parametrize("group,name", [(p.parent.name, p.stem) for p in sorted(ROOT.glob("*/*.yaml"))])
def test_every_group_file_loads_in_every_experiment(experiment, group, name, monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/data")
    extra = list(NEEDS.get(experiment, []))
    if group == "trainer" and name.startswith("deepspeed"):
        extra.append("trainer.accelerator=gpu")
    cfg = load_config(ExperimentConfig, ROOT / experiment, [f"{group}={name}", *DATA, *extra])
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.model.depth is not None and cfg.model.width % cfg.model.heads == 0


def test_other_yaml_files_load():
    from datamodules.prepare.config import PrepareConfig

    cfg = load_config(PrepareConfig, ROOT / "prepare.yaml", ["dataset=folder", "input=in", "output=out"])
    assert cfg.dataset == "folder"


def test_group_selection_and_overrides(monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/data")
    cfg = load_config(ExperimentConfig, ROOT / "stage1.yaml", ["model=tiny", "trainer=cpu", "optim.lr=3e-4", *DATA])
    assert (cfg.model.preset, cfg.model.depth, cfg.model.width) == ("tiny", 2, 128)
    assert cfg.trainer.accelerator == "cpu" and cfg.optim.lr == 3e-4
    assert cfg.run_dir == "runs/stage1"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.batch_sise=8"], "data.batch_sise: unknown key; did you mean 'data.batch_size'?"),
        (["optim.lr=fast"], "optim.lr: "),
        (["data.batch_size=30", "trainer.devices=4"], "data.batch_size: global batch 30 is not divisible"),
        (["optim.lr=2.0"], "optim.lr: 2.0 is out of range"),
        (["trainer.strategy=deepspeed_stage2"], "did you mean 'deepspeed_stage_2'?"),
        (["model=tinny"], "model=tinny: no file"),
        (["trainer=cpu", "trainer.strategy=deepspeed_stage_2"], "trainer.strategy: deepspeed_stage_2 needs CUDA"),
        (["lr"], "not of the form key=value"),
        # a section's own check names the section and field
        (["model.ref_exp_drop_prob=2"], "model.ref_exp_drop_prob: ref_exp_drop_prob must be in [0, 1], got 2.0"),
        (["diffusion.sampling_steps=5000"], "diffusion.sampling_steps: sampling_steps 5000 must be in [1, 1000]"),
        (["model.preset=XL"], "model: model preset 'XL' is not one of"),
        (["diffusion.prediction=velocity"], "diffusion.prediction: prediction 'velocity' is not one of"),
        (["diffusion.acceleration_weight=-1"], "diffusion.acceleration_weight: acceleration_weight must be ≥ 0"),
        (["diffusion.cfg_rescale=2"], "diffusion.cfg_rescale: cfg_rescale must be in [0, 1]"),
        (["optim.decay=linear"], "optim.decay: 'linear' is not one of ['constant', 'cosine']"),
    ],
)
def test_config_errors_are_one_clear_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(ExperimentConfig, ROOT / "stage1.yaml", [*overrides, *DATA])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_mandatory_value(tmp_path):
    (tmp_path / "exp.yaml").write_text("stage: stage1\nmodel: {preset: tiny}\n")
    with pytest.raises(ConfigError, match=r"^name: missing mandatory value; set it in the YAML or add name=\.\.\."):
        load_config(ExperimentConfig, tmp_path / "exp.yaml", DATA)


def test_stage2_requires_init_from(monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/data")
    with pytest.raises(ConfigError, match="stage2.init_from"):
        load_config(ExperimentConfig, ROOT / "stage2.yaml", DATA)


def test_cli_prints_one_line_and_exits_2(capsys):
    from pl_modules.commands import main

    assert main(["train", str(ROOT / "stage1.yaml"), "data.batch_sise=8", *DATA]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'data.batch_size'" in err[0]


def test_bad_paths_print_one_line_naming_the_key(tmp_path, capsys):
    from pl_modules.commands import main

    assert main(["train", str(ROOT / "stage1.yaml"), "setup=synthetic_cpu", "logger=none", f"run_dir={tmp_path / 'r'}",
                 f"data.train_shards=[{tmp_path / 'nope'}]"]) == 2
    assert "data.train_shards:" in capsys.readouterr().err
    from tests.helpers import write_random_dataset

    write_random_dataset(tmp_path / "ds", clips=2, per_shard=1)
    assert main(["train", str(ROOT / "stage2.yaml"), "setup=synthetic_cpu", "logger=none", f"run_dir={tmp_path / 'r2'}",
                 "data.num_workers=0", "data.batch_size=2", f"data.train_shards=[{tmp_path / 'ds'}]",
                 "data.val_shards=[]",
                 f"stage2.init_from={tmp_path / 'missing.ckpt'}"]) == 2
    assert "stage2.init_from:" in capsys.readouterr().err


def test_lr_schedule_warmup_then_constant_or_cosine():
    from pl_modules.module import lr_factor

    assert [lr_factor(s, 4, 20) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(100, 4, 20) == 1.0  # constant after warm-up
    cos = [lr_factor(s, 4, 20, "cosine", 0.1) for s in range(25)]
    assert cos[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(cos[3:], cos[4:]))  # monotone decay after warm-up
    assert cos[19] == pytest.approx(0.1) and cos[24] == pytest.approx(0.1)  # floor at max_steps, and after
    assert cos[11] == pytest.approx(0.55)  # half-way: (1 + floor) / 2


@pytest.mark.parametrize("experiment, datasets", [("stage1.yaml", ["avspeech", "celebv_text", "acappella"]),
                                                  ("stage2.yaml", ["mead", "mafw"])])
def test_stage_configs_are_the_real_data_experiments(experiment, datasets, monkeypatch, tmp_path):
    """Without overrides: the paper's data groups, wav2vec2 from $WAV2VEC2_DIR, ZeRO-2 bf16, preset B."""
    monkeypatch.setenv("DATA_ROOT", "/data")
    monkeypatch.setenv("WAV2VEC2_DIR", str(tmp_path / "w2v"))
    cfg = load_config(ExperimentConfig, ROOT / experiment, NEEDS.get(experiment, []))
    assert cfg.data.train_shards == [f"/data/{d}" for d in datasets]
    assert (cfg.audio.name, cfg.audio.wav2vec2_path) == ("wav2vec2", str(tmp_path / "w2v"))
    assert (cfg.trainer.strategy, cfg.trainer.precision, cfg.trainer.accelerator) == (
        "deepspeed_stage_2", "bf16-mixed", "gpu")
    assert cfg.model.preset == "B" and cfg.data.audio_source == "wav"


def test_missing_wav2vec2_dir_is_one_line_naming_the_key(monkeypatch, capsys):
    from pl_modules.commands import main

    monkeypatch.setenv("DATA_ROOT", "/data")
    monkeypatch.delenv("WAV2VEC2_DIR", raising=False)
    assert main(["train", str(ROOT / "stage1.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "audio.wav2vec2_path is not set" in err[0] and "WAV2VEC2_DIR" in err[0]


def test_setup_overlay_turns_the_experiment_into_the_cpu_synthetic_run(monkeypatch):
    monkeypatch.delenv("DATA_ROOT", raising=False)  # the synthetic data group needs no DATA_ROOT
    for experiment in ("stage1.yaml", "stage2.yaml"):
        cfg = load_experiment(ROOT / experiment, ["setup=synthetic_cpu", *NEEDS.get(experiment, [])])
        assert (cfg.model.preset, cfg.trainer.accelerator, cfg.trainer.precision) == ("tiny", "cpu", "32-true")
        assert cfg.audio.name == "mel" and cfg.data.train_shards == ["data/synth/train"]
        assert cfg.model.audio_layers == 1 and cfg.model.audio_dim == cfg.audio.n_mels
    # the command line still wins over the overlay: group choices and keys
    cfg = load_experiment(ROOT / "stage1.yaml", ["setup=synthetic_cpu", "model=S", "audio.n_mels=40",
                                                "trainer.precision=bf16-mixed"])
    assert (cfg.model.preset, cfg.audio.n_mels, cfg.trainer.precision) == ("S", 40, "bf16-mixed")
    with pytest.raises(ConfigError, match=r"setup=synthetc_cpu: no file .*did you mean 'synthetic_cpu'"):
        load_config(ExperimentConfig, ROOT / "stage1.yaml", ["setup=synthetc_cpu"])


def test_a_stored_config_from_before_diffusion_prediction_reads_as_eps():
    """Checkpoints written before `diffusion.prediction` existed hold ε-predicting networks."""
    from configs.loader import experiment_from_dict, to_container
    from tests.helpers import tiny_config

    stored = to_container(tiny_config())
    del stored["diffusion"]["prediction"]
    assert experiment_from_dict(stored, "old.ckpt").diffusion.prediction == "eps"
    stored["diffusion"]["prediction"] = "v"
    assert experiment_from_dict(stored, "new.ckpt").diffusion.prediction == "v"
