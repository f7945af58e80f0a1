"""Every user error is one line naming the key, file or argument and the fix, exit code 2, no
traceback; a run directory refuses a changed config unless the change is allowed."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers import tiny_config, tiny_overrides, write_checkpoint, write_random_dataset

from pl_modules.commands import main

ROOT = Path(__file__).resolve().parents[2]
STAGE1 = str(ROOT / "configs" / "stage1.yaml")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A dataset, an exported tiny checkpoint, an audio file and a reference, and broken files."""
    import wave

    from datamodules.motion_wds import load_motion_stats

    tmp = tmp_path_factory.mktemp("errors")
    write_random_dataset(tmp / "ds", clips=4, per_shard=2)
    write_random_dataset(tmp / "short", clips=2, frames=40, prefix="short")
    export = write_checkpoint(tmp / "export", tiny_config(tmp / "ds"), load_motion_stats([str(tmp / "ds")]))
    with wave.open(str(tmp / "a.wav"), "wb") as w:  # one second of noise, 16 kHz mono
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.random.default_rng(0).normal(size=16000) * 3000).astype(np.int16).tobytes())
    motion = np.zeros(70, np.float32)
    motion[69] = 1.0
    np.savez(tmp / "ref.npz", motion=motion, kp=np.zeros((21, 3), np.float32))
    (tmp / "garbage.npz").write_bytes(b"not an npz at all")
    (tmp / "garbage.json").write_text("{oops")
    (tmp / "corrupt.ckpt").write_bytes(b"PK\x03\x04 truncated")
    torch.save({"state_dict": {}, "where": Path("/tmp")}, tmp / "pickled.ckpt")  # a class: weights_only refuses it
    return {"tmp": tmp, "ds": tmp / "ds", "short": tmp / "short", "export": export, "wav": tmp / "a.wav",
            "ref": tmp / "ref.npz"}


def one_line_exit_2(argv: list[str], capsys, *fragments: str) -> str:
    os.environ["PLAYMATE_PROGRESS"] = "0"
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"exit {code} for {argv}: {err}"
    lines = [line for line in err.splitlines() if line.startswith("playmate ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert re.search(f, lines[0]), (f, lines[0])
    return lines[0]


# key=value overrides → a pattern the one line must contain (the key, and a hint of the fix)
BAD_CONFIGS = {
    "nan lr": (["optim.lr=nan"], r"optim\.lr"),
    "inf lr": (["optim.lr=inf"], r"optim\.lr"),
    "negative lr": (["optim.lr=-1"], r"optim\.lr"),
    "betas >= 1": (["optim.betas=[1.5,0.9]"], r"optim.*betas.*\[0, 1\)"),
    "one beta": (["optim.betas=[0.9]"], r"betas"),
    "unknown key": (["optim.learning_rate=1"], r"optim\.learning_rate"),
    "wrong type": (["trainer.max_steps=many"], r"trainer\.max_steps"),
    "unknown choice": (["trainer.strategy=fsdp"], r"trainer\.strategy.*(ddp|choose|one of)"),
    "unknown group": (["model=XXL"], r"model"),
    "no equals": (["optim.lr"], r"key=value"),
    "missing stats file": (["data.stats=/nonexistent/stats.json"], r"data\.stats.*nonexistent"),
    "garbage stats file": (["data.stats={tmp}/garbage.json"], r"data\.stats.*garbage\.json"),
    "missing shards": (["data.train_shards=[/nonexistent/ds]"], r"data\.train_shards"),
    "gpu trainer without gpu": (["trainer=gpu"], r"trainer\.(accelerator|strategy|precision).*(GPU|CUDA)"),
    "deepspeed without gpu": (["trainer=deepspeed_stage_2"], r"trainer\.(accelerator|strategy|precision)"),
    "64 cpu devices": (["trainer.devices=64", "data.batch_size=64"], r"trainer\.devices"),
    "wav2vec2 without weights": (["audio.name=wav2vec2"], r"audio\.wav2vec2_path"),
    "wav2vec2 missing dir": (["audio.name=wav2vec2", "audio.wav2vec2_path=/nonexistent/w2v"],
                             r"audio\.wav2vec2_path.*nonexistent"),
    "eval without val shards": (["eval.every_n_steps=10", "data.val_shards=[]"], r"eval\.every_n_steps"),
    "window longer than every clip": (["data.train_shards=[{short}]", "data.val_shards=[{short}]"],
                                      r"model\.t_window|window"),
    "warmup beyond the run": (["optim.warmup_steps=50"], r"optim\.warmup_steps"),
    "batch not divisible": (["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=3"],
                            r"data\.batch_size"),
    "stage two without init": (["stage=stage2"], r"stage2\.init_from"),
    "stage two init missing": (["stage=stage2", "stage2.init_from=/nonexistent/export"], r"stage2\.init_from|nonexist"),
    "bf16 precision on cpu ok, fp16 not": (["trainer.precision=16-mixed"], r"trainer\.precision"),
    "negative workers": (["data.num_workers=-1"], r"data\.num_workers"),
    "bad fraction": (["data.max_bad_fraction=2"], r"data\.max_bad_fraction"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_bad_config_is_one_line_exit_2(case, world, tmp_path, capsys):
    extra, pattern = BAD_CONFIGS[case]
    extra = [e.format(tmp=world["tmp"], short=world["short"]) for e in extra]
    base = tiny_overrides(world["ds"], tmp_path / "run", steps=4)
    keys = {e.split("=", 1)[0] for e in extra}
    base = [o for o in base if o.split("=", 1)[0] not in keys]
    one_line_exit_2(["train", STAGE1, *base, *extra], capsys, pattern)
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def bad_cli_inputs(w: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    g = ["generate", str(w["export"]), "--audio", str(w["wav"]), "--reference", str(w["ref"]),
         "--out", str(w["tmp"] / "o.npy")]
    return {
        "generate: corrupt checkpoint": (["generate", str(w["tmp"] / "corrupt.ckpt"), *g[2:]], r"corrupt\.ckpt"),
        "generate: pickled checkpoint": (["generate", str(w["tmp"] / "pickled.ckpt"), *g[2:]],
                                         r"pickled\.ckpt.*weights_only=True"),
        "generate: missing checkpoint": (["generate", str(w["tmp"] / "none.ckpt"), *g[2:]], r"none\.ckpt"),
        "generate: garbage reference npz": ([*g[:4], "--reference", str(w["tmp"] / "garbage.npz"), *g[6:]],
                                            r"garbage\.npz is not a readable \.npz of arrays \(not an \.npz archive"),
        "generate: missing audio": ([*g[:2], "--audio", str(w["tmp"] / "none.wav"), *g[4:]], r"none\.wav"),
        "generate: --w-a nan": ([*g, "--w-a", "nan"], r"--w-a"),
        "generate: --w-e -1": ([*g, "--w-e", "-1"], r"--w-e"),
        "generate: --steps 0": ([*g, "--steps", "0"], r"--steps"),
        "generate: --seed -3": ([*g, "--seed", "-3"], r"--seed"),
        "generate: --device cuda without cuda": ([*g, "--device", "cuda"], r"--device"),
        "generate: --device nonsense": ([*g, "--device", "tpu9"], r"--device"),
        "generate: emotion of a stage-one model": ([*g, "--emotion", "happy"], r"--emotion|stage"),
        "generate: driving without file": ([*g, "--pose-mode", "driving"], r"--driving"),
        "export: missing checkpoint": (["export", str(w["tmp"] / "none.ckpt"), str(w["tmp"] / "x")], r"none\.ckpt"),
        "export: corrupt checkpoint": (["export", str(w["tmp"] / "corrupt.ckpt"), str(w["tmp"] / "x")],
                                       r"corrupt\.ckpt"),
        "evaluate: missing data": (["evaluate", str(w["export"]), "--data", str(w["tmp"] / "nodata"),
                                    "--random-weights", "--metrics", "sync"], r"nodata"),
        "evaluate: corrupt checkpoint": (["evaluate", str(w["tmp"] / "corrupt.ckpt"), "--data", str(w["ds"]),
                                          "--random-weights"], r"corrupt\.ckpt"),
        "evaluate: unknown metric": (["evaluate", str(w["export"]), "--data", str(w["ds"]), "--metrics", "bleu"],
                                     r"bleu|--metrics"),
        "evaluate: --device cuda": (["evaluate", str(w["export"]), "--data", str(w["ds"]), "--device", "cuda",
                                     "--random-weights"], r"--device|cuda"),
        "shards check: missing dir": (["shards", "check", str(w["tmp"] / "nodata")], r"nodata"),
        "config: bad override": (["config", STAGE1, "setup=synthetic_cpu", "optim.lr=nan"], r"optim\.lr"),
        "config: unknown key": (["config", STAGE1, "setup=synthetic_cpu", "name=x", "--key", "nope.key"], r"nope\.key"),
    }


CLI_CASES = list(bad_cli_inputs({k: Path("/") for k in ("export", "wav", "ref", "tmp", "ds")}))


@pytest.mark.parametrize("case", CLI_CASES, ids=CLI_CASES)
def test_bad_cli_input_is_one_line_exit_2(case, world, capsys):
    argv, pattern = bad_cli_inputs(world)[case]
    one_line_exit_2(argv, capsys, pattern)


# ------------------------------------------------------------------------------------------ drift


def test_a_changed_key_on_resume_is_refused_unless_allowed(world, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", STAGE1, *tiny_overrides(world["ds"], run_dir, steps=2)]) == 0
    stored = (run_dir / "config.yaml").read_text()
    changed = tiny_overrides(world["ds"], run_dir, steps=4, **{"optim.lr": "0.001", "optim.weight_decay": "0.5"})
    line = one_line_exit_2(["train", STAGE1, *changed], capsys, r"optim\.lr: 0\.0001 → 0\.001",
                           r"optim\.weight_decay", r"name=", r"allow_changes=\[optim\.lr,optim\.weight_decay\]")
    assert "trainer.max_steps" not in line  # an operational key may always change
    assert (run_dir / "config.yaml").read_text() == stored  # nothing rewritten
    assert main(["train", STAGE1, *changed, "allow_changes=[optim.*]"]) == 0
    after = (run_dir / "config.yaml").read_text()
    assert "lr: 0.001" in after and torch.load(run_dir / "checkpoints" / "last.ckpt",
                                               weights_only=True)["global_step"] == 4
