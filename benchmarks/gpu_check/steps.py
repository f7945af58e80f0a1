"""One step of the GPU check, in its own process (benchmarks/gpu_check.sh runs them one by one).

    python benchmarks/gpu_check/steps.py STEP --mode gpu|dry --work DIR --scratch DIR [--preset B] [--strategy S]

Steps: env, data, train, resume, profile, compile, sampling, face, s3fd, frechet. Each writes
WORK/steps/<name>.json; exit status 0 = ran and every check passed, 3 = a check failed, other = error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from check_common import ROOT, Ctx, progress, sync


def env(ctx: Ctx) -> None:
    """Device, versions, thread/TF32 settings and a measured bf16 matmul ceiling."""
    import importlib.metadata as md

    import torch

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    f = ctx.figures
    f["python"] = platform.python_version()
    f["torch"], f["cuda"] = torch.__version__, torch.version.cuda
    f["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    for name in ("deepspeed", "lightning", "pytorch-lightning", "transformers", "webdataset", "omegaconf",
                 "torchmetrics", "numpy"):
        f[name] = version(name)
    f["cpu_count"], f["torch_threads"] = os.cpu_count(), torch.get_num_threads()
    try:
        f["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                         timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        f["git_commit"] = None
    missing = [mod for mod in ("lightning", "deepspeed", "webdataset", "omegaconf", "braceexpand", "einops", "scipy",
                               "transformers", "torchmetrics", "matplotlib", "yaml", "PIL")
               if importlib.util.find_spec(mod) is None]
    f["missing_modules"] = missing
    if missing:
        ctx.notes.append("missing Python modules (carry wheels: benchmarks/gpu_wheels.sh): " + "; ".join(missing))
    if ctx.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device visible to torch; use --cpu-dry-run on a CPU machine")
        p = torch.cuda.get_device_properties(0)
        f["device"] = torch.cuda.get_device_name(0)
        f["capability"], f["memory_gib"] = f"{p.major}.{p.minor}", p.total_memory / 2**30
        f["sms"] = p.multi_processor_count
        f["tf32_matmul"], f["tf32_cudnn"] = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            f["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            f["nvidia_smi"] = None
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        sync("cuda")
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        sync("cuda")
        f["bf16_matmul_tflops_measured"] = 10 * 2 * 8192**3 / (time.perf_counter() - t0) / 1e12
    else:
        f["device"] = f"{platform.processor() or platform.machine()} CPU (dry run)"
    progress(f"  {f['device']}, torch {f['torch']}, CUDA {f['cuda']}, DeepSpeed {f['deepspeed']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["env", "data", "train", "resume", "profile", "compile", "sampling", "face", "s3fd",
                                    "frechet"])
    p.add_argument("--name", help="result name (default: the step)")
    p.add_argument("--mode", choices=["gpu", "dry"], required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--scratch", type=Path, required=True)
    p.add_argument("--preset", default="B")
    p.add_argument("--strategy", default="deepspeed_stage_2", choices=["deepspeed_stage_2", "ddp"])
    a = p.parse_args(argv)
    ctx = Ctx(a.mode, a.work, a.scratch)
    # `timeout` sends SIGTERM: unwind so that `finally` writes what the step has measured so far
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(124))
    if ctx.dry:
        import torch

        torch.set_num_threads(1)  # 2 shared cores: more threads are slower
    name = a.name or a.step
    status = 0
    try:
        if a.step == "env":
            env(ctx)
        elif a.step in ("data", "train", "resume"):
            import check_train

            if a.step == "data":
                check_train.data(ctx)
            else:
                check_train.train(ctx, a.preset, a.strategy, resume=a.step == "resume")
        elif a.step in ("profile", "compile"):
            import check_profile

            (check_profile.profile if a.step == "profile" else check_profile.compiled)(ctx, a.preset)
        else:
            import check_infer

            getattr(check_infer, a.step)(ctx)
    except BaseException as e:  # record what was measured before the error, then fail
        ctx.figures["error"] = f"{type(e).__name__}: {e}"[:2000]
        status = 1
        raise
    finally:
        if ctx.failed_checks and not status:
            status = 3
        ctx.write(name)
        print(json.dumps({"step": name, "status": status, "failed_checks": ctx.failed_checks}), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
