"""benchmarks/bench_data.py: its reference (the pipeline before the lean reader) and the pipeline give the
same batches bit for bit, and its plain limit reads the same windows' shapes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from tests.helpers import write_random_dataset

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_data", ROOT / "benchmarks" / "bench_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_pipeline_and_the_pipeline_give_identical_batches(tmp_path: Path):
    bench = _bench()
    write_random_dataset(tmp_path / "ds", clips=8, per_shard=2)
    stream = bench.datamodule(tmp_path / "ds", 0, "wav", 1).train_dataset()
    new, old = iter(stream), iter(bench.reference_stream(stream))
    for _ in range(3):
        a, b = next(new), next(old)
        assert a["key"] == b["key"] and a["data_stats"] == b["data_stats"]
        for k in ("motion", "audio", "kp", "ref_motion", "pose_mean", "start", "has_context", "emotion"):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    plain = next(iter(bench.PlainTarWindows(sorted(str(p) for p in (tmp_path / "ds").glob("*.tar")), "wav")))
    assert plain["motion"].shape == a["motion"].shape and plain["audio"].shape == a["audio"].shape
