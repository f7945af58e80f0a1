"""Checkpoints that cannot be lost: a kill during a save (the temporary directory on another
filesystem), a truncated or missing last.ckpt, a requeue on a checkpoint step, nothing loadable."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tests.helpers import tiny_overrides, write_random_dataset

from configs.loader import load_experiment
from pl_modules.checkpoint_io import (
    ResumeError,
    checkpoint_step,
    clean_temporaries,
    find_resume_checkpoint,
    publish_directory,
)
from pl_modules.commands import main
from pl_modules.train import train

ROOT = Path(__file__).resolve().parents[2]

# A child that saves a checkpoint through the production CheckpointIO and blocks half-way through the
# write of the second one (the parent then kills it with SIGKILL).
SLOW_SAVE = r"""
import sys, time, torch
from pathlib import Path
from pl_modules.checkpoint_io import AtomicCheckpointIO
target, marker = Path(sys.argv[1]), Path(sys.argv[2])
io = AtomicCheckpointIO()
io.save_checkpoint({"global_step": 10, "w": torch.ones(1_000_000)}, target)
real_save = torch.save
def stalled_save(obj, f, *a, **k):
    class Half:
        written = 0
        def write(self, b):
            Half.written += len(b)
            if Half.written > 2_000_000:
                marker.write_text("mid-write")
                time.sleep(600)
            return f.write(b)
        def flush(self): f.flush()
    real_save(obj, Half(), *a, **k)
torch.save = stalled_save
io.save_checkpoint({"global_step": 12, "w": torch.zeros(1_000_000)}, target)
"""


def test_kill_during_save_with_tmpdir_on_another_filesystem_keeps_the_previous_checkpoint(tmp_path):
    shm = Path("/dev/shm")
    tmpdir = Path(os.environ.get("PLAYMATE_TEST_OTHER_FS", shm if shm.is_dir() else tmp_path / "other"))
    tmpdir.mkdir(exist_ok=True)
    target, marker = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "marker"
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(target), str(marker)], env=env, cwd=ROOT)
    deadline = time.time() + 120
    while not marker.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"the child never reached the second save (exit {child.poll()})"
    child.send_signal(signal.SIGKILL)
    child.wait()
    leftovers = [p.name for p in target.parent.iterdir() if p.name != "last.ckpt"]
    assert leftovers and all(n.startswith(".last.ckpt.tmp-") for n in leftovers)  # the interrupted write
    assert checkpoint_step(target) == 10  # the previous complete checkpoint, untouched
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(1_000_000))
    assert clean_temporaries(target.parent) and [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


# ------------------------------------------------------------------------------------------ resume


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A finished 4-step run (checkpoints at steps 2 and 4, last.ckpt = step 4) and its data."""
    tmp = tmp_path_factory.mktemp("ckfaults")
    write_random_dataset(tmp / "ds", clips=8, per_shard=2)
    os.environ["PLAYMATE_PROGRESS"] = "0"
    train(load_experiment(ROOT / "configs" / "stage1.yaml", tiny_overrides(tmp / "ds", tmp / "run", steps=4)))
    return tmp / "ds", tmp / "run"


def copy_run(trained, tmp_path) -> Path:
    shutil.copytree(trained[1], tmp_path / "run")
    return tmp_path / "run"


def resume(trained, run_dir: Path, steps: int):
    return train(load_experiment(ROOT / "configs" / "stage1.yaml", tiny_overrides(trained[0], run_dir, steps=steps)))


def test_truncated_last_resumes_from_the_newest_valid_step_file_and_says_so(trained, tmp_path, caplog):
    run_dir = copy_run(trained, tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 10])
    point = find_resume_checkpoint(run_dir / "checkpoints")
    assert point.path.name == "step00000004.ckpt" and point.step == 4
    assert "last.ckpt: not a complete checkpoint archive" in point.describe()
    with caplog.at_level("INFO", logger="playmate.train"):
        trainer = resume(trained, run_dir, steps=6)
    assert trainer.global_step == 6
    assert any("resuming from" in r.message and "step00000004.ckpt at step 4" in r.message for r in caplog.records)
    assert checkpoint_step(last) == 6  # last.ckpt is whole again


def test_missing_last_resumes_from_step_files_not_from_scratch(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    (run_dir / "checkpoints" / "last.ckpt").unlink()
    trainer = resume(trained, run_dir, steps=6)
    assert trainer.global_step == 6
    opt_steps = {int(s["step"]) for s in trainer.optimizers[0].state.values()}
    assert opt_steps == {6}  # continued from step 4's optimiser state


def test_requeue_on_a_checkpoint_step_keeps_one_last_that_is_the_newest(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    resume(trained, run_dir, steps=6)
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step00000002.ckpt", "step00000004.ckpt", "step00000006.ckpt"]
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == 6
    assert find_resume_checkpoint(run_dir / "checkpoints").step == 6


def test_nothing_loadable_refuses_to_start_from_scratch(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path)
    for p in (run_dir / "checkpoints").glob("*.ckpt"):
        p.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ResumeError, match="checkpoints exist but none can be loaded"):
        find_resume_checkpoint(run_dir / "checkpoints")
    code = main(["train", str(ROOT / "configs" / "stage1.yaml"), *tiny_overrides(trained[0], run_dir, steps=6)])
    err = capsys.readouterr().err
    assert code == 2 and "none can be loaded" in err and "Traceback" not in err
    assert all(p.read_bytes() == b"PK\x03\x04 cut short" for p in (run_dir / "checkpoints").glob("*.ckpt"))


def test_a_checkpoint_of_something_else_is_skipped_with_its_reason(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    torch.save({"global_step": 3, "state_dict": {}}, ckpts / "step00000003.ckpt")
    torch.save({"weights": torch.ones(2)}, ckpts / "step00000009.ckpt")  # loads, but no step
    point = find_resume_checkpoint(ckpts)
    assert point.step == 3 and "step00000009.ckpt: no global_step" in point.describe()


# ------------------------------------------------------------------------------ DeepSpeed directories


def write_ds_dir(step: int):
    """A DeepSpeed-layout checkpoint directory (what each rank writes) at `step`."""
    def write(d: Path) -> None:
        (d / "checkpoint").mkdir(parents=True)
        torch.save({"global_step": step, "module": {"w": torch.full((4,), float(step))}},
                   d / "checkpoint" / "mp_rank_00_model_states.pt")
        torch.save({"optimizer_state_dict": {"step": step}},
                   d / "checkpoint" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    return write


def test_deepspeed_directories_are_published_atomically_and_a_killed_write_leaves_the_previous(tmp_path):
    last = tmp_path / "last.ckpt"
    publish_directory(last, write_ds_dir(2))
    assert last.is_dir() and not last.is_symlink() and checkpoint_step(last) == 2
    publish_directory(last, write_ds_dir(4))  # an existing name becomes a link switched atomically
    assert last.is_symlink() and checkpoint_step(last) == 4
    publish_directory(last, write_ds_dir(6))
    assert checkpoint_step(last) == 6 and sorted(p.name for p in tmp_path.iterdir()) == [".last.ckpt.2", "last.ckpt"]

    def killed(d: Path) -> None:
        write_ds_dir(8)(d)
        raise KeyboardInterrupt  # the job dies after its shards are written, before publishing

    with pytest.raises(KeyboardInterrupt):
        publish_directory(last, killed)
    assert checkpoint_step(last) == 6 and find_resume_checkpoint(tmp_path).step == 6
    assert [p.name for p in clean_temporaries(tmp_path)] == [".last.ckpt.3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.ckpt.2", "last.ckpt"]


def test_a_deepspeed_directory_with_a_truncated_shard_is_skipped(tmp_path):
    publish_directory(tmp_path / "step00000002.ckpt", write_ds_dir(2))
    publish_directory(tmp_path / "step00000004.ckpt", write_ds_dir(4))
    shard = tmp_path / "step00000004.ckpt" / "checkpoint" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[:100])
    point = find_resume_checkpoint(tmp_path)
    assert point.step == 2 and "step00000004.ckpt" in point.describe()
