"""benchmarks/gpu_check.sh --cpu-dry-run: every step of the GPU check runs its code path on CPU (tiny preset),
so the script a GPU session runs once, with no second chance, cannot rot between GPU sessions."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_IN_DRY_RUN = {"train_B_ddp", "resume_B_ddp", "train_L_deepspeed_stage_2", "compile_B"}


def test_gpu_check_cpu_dry_run_runs_every_step_and_writes_its_report(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "GPU_CHECK_BUDGET_S": "900"}  # a loaded machine must not skip steps
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-dry-run"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.md", "gpu_check_logs.txt"]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = data["steps"]
    assert data["meta"]["mode"] == "dry"
    assert {n for n, s in steps.items() if s["status"] == "skipped"} == SKIPPED_IN_DRY_RUN
    assert all(s["status"] == "ok" for n, s in steps.items() if n not in SKIPPED_IN_DRY_RUN), steps
    resume = steps["resume_B_deepspeed_stage_2"]["figures"]
    assert resume["start_step"] == steps["train_B_deepspeed_stage_2"]["figures"]["end_step"] == 4
    assert resume["end_step"] == 6 and "ddp on CPU" in resume["strategy"]
    assert resume["checks"] and all(c["ok"] for c in resume["checks"].values())  # resume, export, EMA
    assert steps["profile_B"]["figures"]["profile"]["top"]  # the profiler summary
    assert steps["profile_B"]["figures"]["wav2vec2_in_step"]["samples_per_s"] > 0  # the encoder-in-step option
    assert steps["sampling"]["figures"]["rows"][0]["motion_s_per_s"] > 0
    assert steps["face"]["figures"]["rows"][0]["render_fps"] > 0
    s3fd = steps["s3fd"]["figures"]
    assert s3fd.get("rows") or "s3fd.py" in s3fd["skipped"]
    assert steps["pytest"]["figures"]["tests"] >= 1  # the GPU-marked tests were collected (and skipped on CPU)
    md = (tmp_path / "gpu_check.md").read_text()
    assert "CPU DRY RUN" in md and "| train_B_deepspeed_stage_2 |" in md and "MFU = samples/s × 3" in md
