"""Bad numbers and bad data: implausible statistics and motion are rejected where they enter, a
non-finite loss stops training with the last good weights, bad samples are counted over the whole
run and named by shard, a worker whose shards yield nothing stops with an error instead of hanging."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers import tiny_overrides, write_random_dataset

import datamodules.shards as shards_mod
import pl_modules.module as module_mod
from pl_modules.commands import main

ROOT = Path(__file__).resolve().parents[2]
STAGE1 = str(ROOT / "configs" / "stage1.yaml")


def train_cli(ds: Path, run_dir: Path, capsys, steps: int = 4, **extra: str) -> tuple[int, str]:
    os.environ["PLAYMATE_PROGRESS"] = "0"
    code = main(["train", STAGE1, *tiny_overrides(ds, run_dir, steps=steps, **extra)])
    return code, capsys.readouterr().err


def write_with_bad_clips(out: Path, bad: dict[int, float], clips: int = 8, per_shard: int = 2) -> None:
    """A dataset whose clips `bad` (index → value) carry that value in an expression coefficient,
    written past the writer's validation (as an older writer would have); stats.json is the clean
    dataset's, so only the samples are wrong."""
    write_random_dataset(out.with_name(out.name + "-clean"), clips=clips, per_shard=per_shard)
    real_save = np.save

    def save(f, arr, *a, **k):  # motion.npy of a chosen clip gets the bad value
        if arr.shape[-1:] == (70,) and save.index in bad:
            arr = arr.copy()
            arr[5, 3] = bad[save.index]
        if arr.shape[-1:] == (70,):
            save.index += 1
        return real_save(f, arr, *a, **k)

    save.index = 0
    mp = pytest.MonkeyPatch()
    mp.setattr(shards_mod, "validate_sample", lambda s: s)
    mp.setattr(np, "save", save)
    try:
        write_random_dataset(out, clips=clips, per_shard=per_shard)
    finally:
        mp.undo()
    shutil.copy(out.with_name(out.name + "-clean") / "stats.json", out / "stats.json")


def shards_check(ds: Path, capsys) -> tuple[int, str]:
    code = main(["shards", "check", str(ds), "--no-video"])
    return code, capsys.readouterr().out


# ------------------------------------------------------------------------------------- statistics


def test_nan_in_the_stats_accumulators_fails_shards_check_and_training(tmp_path, capsys):
    ds = tmp_path / "ds"
    write_random_dataset(ds, clips=4)
    stats = json.loads((ds / "stats.json").read_text())
    stats["accumulators"]["exp_sumsq"][7] = float("nan")
    (ds / "stats.json").write_text(json.dumps(stats))
    code, out = shards_check(ds, capsys)
    assert code == 1 and "stats.json" in out and "non-finite" in out
    code, err = train_cli(ds, tmp_path / "run", capsys)
    assert code == 2 and "data.stats" in err and "stats.json" in err and "non-finite" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_an_expression_of_1e6_is_flagged_and_its_clip_skipped_in_training(tmp_path, capsys, caplog):
    ds = tmp_path / "ds"
    write_with_bad_clips(ds, {3: 1e6})
    code, out = shards_check(ds, capsys)
    assert code == 1 and "rand-s0c0003" in out and "expression value 1e+06 outside ±10" in out
    assert "1 bad samples" in out
    with caplog.at_level("WARNING"):
        code, err = train_cli(ds, tmp_path / "run", capsys, steps=4)
    assert code == 0, err
    assert any("rand-s0c0003" in r.getMessage() and "1e+06" in r.getMessage() for r in caplog.records)
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ck["global_step"] == 4 and all(torch.isfinite(v).all() for v in ck["state_dict"].values())
    health = ck["MotionDataModule"]["health"]  # Lightning stores the datamodule state by class name
    bad = sum(s["bad"] for s in health["snapshots"])
    assert bad >= 1  # counted (the clip may be drawn more than once)


# ------------------------------------------------------------------------------------ non-finite loss


@pytest.mark.parametrize("fused", ["true", "false"])
def test_non_finite_loss_stops_after_max_bad_steps_with_the_last_good_weights(fused, tmp_path, capsys, monkeypatch):
    ds = tmp_path / "ds"
    write_random_dataset(ds, clips=8)
    real_loss = module_mod.training_loss
    calls = {"n": 0}

    def loss_that_turns_nan(*a, **k):
        out = real_loss(*a, **k)
        calls["n"] += 1
        if calls["n"] > 2:  # steps 3, 4, 5, … have a NaN loss (and so NaN gradients)
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(module_mod, "training_loss", loss_that_turns_nan)
    code, err = train_cli(ds, tmp_path / "run", capsys, steps=20, **{"trainer.log_every_n_steps": "1",
                                                                      "trainer.ckpt_every_n_steps": "1",
                                                                      "trainer.keep_last_checkpoints": "10",
                                                                      "trainer.val_every_n_steps": "0",
                                                                      "optim.fused": fused})
    assert code == 1 and "3 consecutive step(s) with a non-finite loss" in err and "optim.max_bad_steps=3" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    ckpts = tmp_path / "run" / "checkpoints"
    good = torch.load(ckpts / "step00000002.ckpt", weights_only=True)
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert last["global_step"] <= 5
    for k, v in good["state_dict"].items():  # no update was applied after step 2; nothing is NaN
        assert torch.isfinite(last["state_dict"][k]).all() and torch.equal(last["state_dict"][k], v), k
    ema = next(v for n, v in last["callbacks"].items() if n.startswith("EMACallback"))["shadow"]
    assert all(torch.isfinite(v).all() for v in ema.values())
    opt_steps = {int(s["step"]) for s in last["optimizer_states"][0]["state"].values()}
    assert opt_steps == {2}  # skipped steps do not advance Adam


# ------------------------------------------------------------------------------------------ bad data


def test_a_worker_whose_shards_are_empty_tars_stops_with_an_error_not_a_hang(tmp_path, capsys):
    ds = tmp_path / "ds"
    write_random_dataset(ds, clips=4, per_shard=2)  # rand-000000.tar, rand-000001.tar
    manifest = json.loads((ds / "manifest.json").read_text())
    with tarfile.open(ds / "rand-000001.tar", "w"):
        pass  # a valid tar with no member
    manifest["shards"][1].update(count=0, sha256=shards_mod.sha256_file(ds / "rand-000001.tar"))
    (ds / "manifest.json").write_text(json.dumps(manifest))
    code, err = train_cli(ds, tmp_path / "run", capsys, **{"data.num_workers": "2", "data.loader_timeout_s": "60"})
    assert code == 1 and "data worker 1" in err and "rand-000001.tar" in err and "yielded no sample" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_one_bad_worker_trips_the_run_wide_budget_naming_its_shards(tmp_path, capsys):
    ds = tmp_path / "ds"
    # 16 clips in 8 shards; the two workers get shards 0,2,4,6 and 1,3,5,7; worker 0's shards 0 and 2
    # hold 3 bad clips of its 8 (38 %), the run as a whole 3 of 16
    write_with_bad_clips(ds, {0: 1e6, 1: float("nan"), 4: -1e5}, clips=16, per_shard=2)
    code, err = train_cli(ds, tmp_path / "run", capsys, steps=40,
                          **{"data.num_workers": "2", "data.max_bad_fraction": "0.05", "data.min_bad_samples": "3",
                             "trainer.val_every_n_steps": "0"})
    assert code == 1, err
    assert "samples read so far were bad (> data.max_bad_fraction=0.05)" in err
    assert "rand-000000.tar" in err and "rand-000002.tar" in err and "playmate shards check" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_samples_are_counted_exactly(tmp_path):
    """The ledger counts each skipped sample once and each sample read once, shuffle buffer or not."""
    from configs.loader import load_experiment
    from datamodules.motion_wds import MotionDataModule

    ds = tmp_path / "ds"
    write_with_bad_clips(ds, {2: 1e6, 5: float("inf")}, clips=8, per_shard=2)
    cfg = load_experiment(STAGE1, tiny_overrides(ds, tmp_path / "run", **{"data.max_bad_fraction": "1.0"}))
    from datamodules.health import SampleLedger
    from datamodules.motion_wds import decoded_clips, shards_once

    dm = MotionDataModule(cfg.data, t_window=cfg.model.t_window, tp=cfg.model.tp)
    dm.setup("fit")
    import webdataset as wds

    ledger = SampleLedger(0, 0, dm.train_urls)
    maker = dm.train_dataset().maker
    clips = list(wds.DataPipeline(wds.SimpleShardList(dm.train_urls), lambda s: shards_once(s, ledger),
                                  wds.tarfile_to_samples(handler=ledger.tar_error),
                                  lambda s: decoded_clips(s, ledger, maker)))
    assert len(clips) == 6 and ledger.seen == 8 and ledger.bad == 2
    assert dict(ledger.bad_shards) == {str(ds / "rand-000001.tar"): 1, str(ds / "rand-000002.tar"): 1}


def test_a_truncated_shard_is_counted_once_under_its_own_name(tmp_path):
    from datamodules.health import SampleLedger
    from datamodules.motion_wds import shards_once
    import webdataset as wds

    ds = tmp_path / "ds"
    write_random_dataset(ds, clips=6, per_shard=2)
    shard = ds / "rand-000001.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    urls = [str(ds / f"rand-00000{i}.tar") for i in range(3)]
    ledger = SampleLedger(0, 0, urls)
    samples = list(wds.DataPipeline(wds.SimpleShardList(urls), lambda s: shards_once(s, ledger),
                                    wds.tarfile_to_samples(handler=ledger.tar_error)))
    assert ledger.read_errors == 1 and dict(ledger.bad_shards) == {str(shard): 1}
    assert {s["__url__"] for s in samples} >= {urls[0], urls[2]}


@pytest.mark.parametrize("content,fragment", [("{not json", "not a valid manifest"),
                                               ('{"shards": []}', "lists no shards")])
def test_bad_manifests_are_one_line_in_training_and_shards_check(tmp_path, capsys, content, fragment):
    ds = tmp_path / "ds"
    write_random_dataset(ds, clips=4)
    (ds / "manifest.json").write_text(content)
    code, err = train_cli(ds, tmp_path / "run", capsys)
    assert code == 2 and "data.train_shards" in err and "manifest.json" in err and fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, out = shards_check(ds, capsys)
    assert code == 1 and "manifest.json" in out
    assert fragment in out


def test_the_budget_spans_epochs_and_workers():
    """5 bad of 100 per (epoch, worker) never reaches min_bad=10 on its own; over the run it does."""
    from datamodules.health import BadDataError, DataHealth

    health = DataHealth(max_fraction=0.03, min_bad=10)

    def snap(epoch, worker, bad, url):
        return {"epoch": epoch, "worker": worker, "seen": 100, "bad": bad, "read_errors": 0,
                "bad_shards": {url: bad}, "reasons": {url: "expression value 1e+06 outside ±10"}}

    health.update(snap(0, 0, 5, "a.tar"))
    health.update(snap(0, 0, 5, "a.tar"))  # a later snapshot of the same worker replaces, not adds
    assert (health.bad, health.seen) == (5, 100)
    health.update(snap(0, 1, 2, "b.tar"))
    restored = DataHealth(max_fraction=0.03, min_bad=10)
    restored.load_state_dict(health.state_dict())  # what a resumed run starts from
    with pytest.raises(BadDataError, match=r"12 of 300 samples read so far were bad.*a\.tar \(10 bad"):
        restored.update(snap(1, 0, 5, "a.tar"))


def test_evaluate_reports_every_clip_it_skips_and_why(tmp_path, capsys):
    from tests.helpers import tiny_config, write_checkpoint

    from datamodules.motion_wds import load_motion_stats

    ds = tmp_path / "ds"
    write_with_bad_clips(ds, {1: 1e6}, clips=6, per_shard=2)
    shard = ds / "rand-000002.tar"
    shard.write_bytes(shard.read_bytes()[:3000])  # truncated: its samples cannot all be read
    export = write_checkpoint(tmp_path / "export", tiny_config(ds), load_motion_stats([str(ds)]))
    code = main(["evaluate", str(export), "--data", str(ds), "--out", str(tmp_path / "eval"), "--metrics", "motion",
                 "--max-clips", "8", "--max-frames", "30", "--steps", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "skipped " + str(ds / "rand-000000.tar") + ":rand-s0c0001: motion.npy expression value 1e+06" in out
    assert f"skipped {shard}:-: unreadable tar" in out and "2 sample(s)/shard(s) of --data skipped" in out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert [(c["key"], c["shard"].rsplit("/", 1)[-1]) for c in metrics["skipped_clips"]] == [
        ("rand-s0c0001", "rand-000000.tar"), ("-", "rand-000002.tar")]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "Skipped while loading the clips" in report and "rand-s0c0001" in report
