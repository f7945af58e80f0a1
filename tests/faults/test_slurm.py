"""`sbatch sbatch/stage1.sh` from a fresh clone under a fake SLURM (an `srun` shim, an `scontrol`
that records its calls, the SLURM_* variables sbatch sets): the log path exists, training starts,
SIGUSR1 to the job step → checkpoint → requeue → the same command resumes and finishes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import torch
from tests.helpers import write_random_dataset

ROOT = Path(__file__).resolve().parents[2]
STEPS = 60


def fresh_clone(dest: Path) -> Path:
    """The files a `git clone` of this working tree would have (tracked and not ignored; nothing else,
    so no logs/ or runs/ directory)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    return dest


def shims(bin_dir: Path) -> None:
    bin_dir.mkdir()
    # srun: record the options, give the task SLURM's per-task variables, become the task
    (bin_dir / "srun").write_text('#!/bin/bash\necho "$@" >> "$SRUN_LOG"\nwhile [[ "$1" == --* ]]; do shift; done\n'
                                  'export SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0\nexec "$@"\n')
    (bin_dir / "scontrol").write_text('#!/bin/bash\necho "$@" >> "$SCONTROL_LOG"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)


def output_path(script: Path, env: dict[str, str]) -> Path:
    """Where SLURM opens the job's log (--output with %x = job name, %j = job id), before the script runs."""
    pattern = re.search(r"^#SBATCH --output=(\S+)", script.read_text(), re.M).group(1)
    name = pattern.replace("%x", env["SLURM_JOB_NAME"]).replace("%j", env["SLURM_JOB_ID"])
    return Path(env["SLURM_SUBMIT_DIR"]) / name


def task_processes(pid: int) -> list[int]:
    """The job step's processes: the training process and its children (the data workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for t in Path(f"/proc/{p}/task").glob("*"):
            children = (t / "children").read_text().split() if (t / "children").exists() else []
            todo += [int(c) for c in children]
    return out


def test_sbatch_stage1_from_a_fresh_clone_under_fake_slurm(tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    write_random_dataset(tmp_path / "ds", clips=8, per_shard=2)
    shims(tmp_path / "bin")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NAME": "playmate-stage1", "SLURM_SUBMIT_DIR": str(clone), "SLURM_NNODES": "1",
           "SLURM_NTASKS_PER_NODE": "1", "SLURM_NTASKS": "1", "SLURM_CPUS_PER_TASK": "2",
           "SLURM_NODELIST": "localhost", "SRUN_LOG": str(tmp_path / "srun.log"),
           "SCONTROL_LOG": str(tmp_path / "scontrol.log"), "PYTHONPATH": ""}
    for var in ("MASTER_PORT", "RUN_DIR", "PLAYMATE_PROGRESS", "OMP_NUM_THREADS"):
        env.pop(var, None)
    args = ["name=slurmtest", "setup=synthetic_cpu", "model=tiny", "logger=none",
            f"data.train_shards=[{tmp_path / 'ds'}]",
            f"data.val_shards=[{tmp_path / 'ds'}]", "data.batch_size=4", "data.num_workers=1",
            "data.epoch_windows=16", "data.val_max_clips=4", "data.val_batch_size=4", f"trainer.max_steps={STEPS}",
            "trainer.ckpt_every_n_steps=2", "trainer.val_every_n_steps=20", "trainer.limit_val_batches=1",
            "trainer.log_every_n_steps=5", "diffusion.sampling_steps=4", "optim.warmup_steps=2"]
    script = clone / "sbatch" / "stage1.sh"
    log = output_path(script, env)
    assert log.parent.is_dir(), f"SLURM cannot open {log}: its directory does not exist in a fresh clone"

    def submit() -> subprocess.Popen:  # SLURM opens the log (append mode), then runs the script
        with open(log, "a") as out:
            return subprocess.Popen(["bash", str(script), *args], env=env, cwd=clone, stdout=out,
                                    stderr=subprocess.STDOUT)

    job = submit()
    ckpts = clone / "runs" / "slurmtest" / "checkpoints"
    deadline = time.time() + 300
    while "[train] step 5/" not in log.read_text() and job.poll() is None and time.time() < deadline:
        time.sleep(0.2)  # the first progress line (trainer.log_every_n_steps=5), and checkpoints before it
    assert job.poll() is None, log.read_text()
    python_pid = int(subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()[0])
    for pid in task_processes(python_pid):  # --signal=SIGUSR1@600 goes to every process of the step
        os.kill(pid, signal.SIGUSR1)
    job.wait(timeout=240)
    text = log.read_text()
    assert job.returncode == 128 + signal.SIGUSR1, text
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert "stopped on SIGUSR1" in text and "SLURM job 4242 requeued" in text and "Traceback" not in text
    assert "[sbatch] job 4242" in text and "[train] step" in text
    srun = (tmp_path / "srun.log").read_text()
    assert "trainer.num_nodes=1 trainer.devices=1" in srun and "--kill-on-bad-exit=1" in srun
    run_dir = clone / "runs" / "slurmtest"
    assert (run_dir / log.name).resolve() == log  # the log is linked into the run directory
    stopped_at = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert 5 <= stopped_at < STEPS

    job = submit()  # the requeued job: the same command, the same log
    assert job.wait(timeout=300) == 0, log.read_text()
    text = log.read_text()
    assert f"resuming from {ckpts / 'last.ckpt'} at step {stopped_at}" in text
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == STEPS
    assert (run_dir / "export" / "model.pt").is_file() and "devices: 1" in (run_dir / "config.yaml").read_text()


def test_sigterm_to_every_process_of_the_step_checkpoints_and_exits_143(tmp_path):
    """scancel and preemption send SIGTERM to the training process and its data workers alike: the
    workers leave it to the training process, which writes its checkpoint and exits 128 + 15."""
    from tests.helpers import tiny_overrides

    write_random_dataset(tmp_path / "ds", clips=8, per_shard=2)
    env = {**os.environ, "PLAYMATE_PROGRESS": "0"}
    env.pop("SLURM_JOB_ID", None)
    ov = tiny_overrides(tmp_path / "ds", tmp_path / "run", steps=STEPS, **{"data.num_workers": "2",
                        "trainer.log_every_n_steps": "5", "trainer.val_every_n_steps": "0"})
    job = subprocess.Popen(["python", "-m", "pl_modules.commands", "train", "configs/stage1.yaml", *ov], cwd=ROOT,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    while job.poll() is None and not any("[train] step 5/" in line for line in lines):
        lines.append(job.stdout.readline())
    processes = task_processes(job.pid)  # the training process and its data workers
    assert len(processes) >= 2, lines
    for pid in processes:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:  # a worker that finished its epoch's share meanwhile
            pass
    out = "".join(lines) + job.communicate(timeout=120)[0]
    assert job.returncode == 128 + signal.SIGTERM, out
    assert "stopped on SIGTERM" in out and "stopping without a requeue" in out
    assert "killed by signal" not in out and "Traceback" not in out
    assert out.count("left to the training process") >= 1, out  # the workers saw the signal and stayed
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert 5 <= ck["global_step"] < STEPS
