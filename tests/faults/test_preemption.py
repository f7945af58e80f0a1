"""Signals at any step: SIGTERM and SIGUSR1 write a checkpoint at the next step boundary (also inside a
validation), exit non-zero, and a resumed run ends with the weights of an uninterrupted one, bit for bit."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from tests.helpers import tiny_overrides, write_random_dataset

import pl_modules.train as train_mod
from configs.loader import load_experiment
from pl_modules.commands import main
from pl_modules.preemption import Preempted

ROOT = Path(__file__).resolve().parents[2]
STEPS = 7


class SendSignal(pl.Callback):
    """Deliver `sig` to this process at the start of training step `step` (or validation batch)."""

    def __init__(self, sig: int, step: int, in_validation: bool = False) -> None:
        self.sig, self.step, self.in_validation, self.sent = sig, step, in_validation, False

    def _maybe(self, trainer: pl.Trainer) -> None:
        if not self.sent and trainer.global_step == self.step:
            self.sent = True
            os.kill(os.getpid(), self.sig)

    def on_train_batch_start(self, trainer, *args) -> None:
        if not self.in_validation:
            self._maybe(trainer)

    def on_validation_batch_start(self, trainer, *args) -> None:
        if self.in_validation:
            self._maybe(trainer)


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "ds"
    write_random_dataset(out, clips=8, per_shard=2)
    return out


def overrides(ds: Path, run_dir: Path, workers: int, **extra: str) -> list[str]:
    return tiny_overrides(ds, run_dir, steps=STEPS, **{"data.num_workers": str(workers),
                                                       "trainer.val_every_n_steps": "3", **extra})


def train_with(cfg_overrides: list[str], monkeypatch, extra: pl.Callback | None = None):
    os.environ["PLAYMATE_PROGRESS"] = "0"
    build = train_mod.build_callbacks
    monkeypatch.setattr(train_mod, "build_callbacks",
                        lambda *a, **k: build(*a, **k) + ([extra] if extra else []))
    return train_mod.train(load_experiment(ROOT / "configs" / "stage1.yaml", cfg_overrides))


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    ck = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ema = next(v for k, v in ck["callbacks"].items() if k.startswith("EMACallback"))["shadow"]
    return {**ck["state_dict"], **{f"ema.{k}": v for k, v in ema.items()}, "step": torch.tensor(ck["global_step"])}


@pytest.fixture(scope="module")
def uninterrupted(ds, tmp_path_factory) -> dict[int, dict[str, torch.Tensor]]:
    out = {}
    mp = pytest.MonkeyPatch()
    try:
        for workers in (0, 1):
            run_dir = tmp_path_factory.mktemp(f"whole{workers}") / "run"
            train_with(overrides(ds, run_dir, workers), mp)
            out[workers] = final_state(run_dir)
    finally:
        mp.undo()
    return out


# Steps drawn once (seeded) so the suite is reproducible; each signal type meets both loader modes.
_rng = random.Random(12)
CASES = [(signal.SIGTERM, 0, _rng.randrange(1, STEPS - 1)), (signal.SIGUSR1, 0, _rng.randrange(1, STEPS - 1)),
         (signal.SIGTERM, 1, _rng.randrange(1, STEPS - 1)), (signal.SIGUSR1, 1, _rng.randrange(1, STEPS - 1))]


@pytest.mark.parametrize("sig,workers,step", CASES, ids=[f"{signal.Signals(s).name}-w{w}-step{k}" for s, w, k in CASES])
def test_signal_then_resume_is_bit_identical(sig, workers, step, ds, uninterrupted, tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    run_dir = tmp_path / "run"
    with pytest.raises(Preempted) as stop:
        train_with(overrides(ds, run_dir, workers), monkeypatch, SendSignal(sig, step))
    assert stop.value.exit_code == 128 + sig and stop.value.step == step + 1
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step + 1
    monkeypatch.undo()
    train_with(overrides(ds, run_dir, workers), monkeypatch)
    got, want = final_state(run_dir), uninterrupted[workers]
    assert got.keys() == want.keys()
    differ = [k for k in want if not torch.equal(got[k], want[k])]
    assert not differ, f"resumed run differs from the uninterrupted one in {differ[:5]}"


def test_sigusr1_inside_validation_checkpoints_before_the_validation_ends(ds, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    with pytest.raises(Preempted) as stop:
        train_with(overrides(ds, run_dir, 0, **{"trainer.limit_val_batches": "2"}), monkeypatch,
                   SendSignal(signal.SIGUSR1, 3, in_validation=True))
    assert stop.value.step == 3
    monkeypatch.undo()
    trainer = train_with(overrides(ds, run_dir, 0, **{"trainer.limit_val_batches": "2"}), monkeypatch)
    assert trainer.global_step == STEPS


def test_without_scontrol_the_cli_says_so_and_exits_non_zero(ds, tmp_path, monkeypatch, capsys):
    """SIGUSR1 in a SLURM job inside a container that has no scontrol: one clear line, exit 138."""
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no scontrol anywhere
    build = train_mod.build_callbacks
    monkeypatch.setattr(train_mod, "build_callbacks", lambda *a, **k: build(*a, **k) + [SendSignal(signal.SIGUSR1, 2)])
    monkeypatch.setenv("PLAYMATE_PROGRESS", "0")
    code = main(["train", str(ROOT / "configs" / "stage1.yaml"), *overrides(ds, tmp_path / "run", 0)])
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGUSR1
    assert "scontrol is not available here" in err and "job 777 was not requeued" in err
    assert "Traceback" not in err
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
