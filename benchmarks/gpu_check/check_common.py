"""Shared pieces of the GPU check steps: the context a step runs in, its result file, timing helpers.

Every step runs in its own process (benchmarks/gpu_check.sh), writes WORK/steps/<name>.json with its
figures and notes, and exits non-zero on an error or a failed check, after writing what it has.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

# Dense bf16 peak the MFU figures divide by when the device name is not recognised (H100/H200 SXM).
H100_PEAK_BF16 = 989e12


@dataclass
class Ctx:
    """Where a step runs: mode `gpu` (the real check) or `dry` (tiny preset on CPU, same code paths)."""

    mode: str
    work: Path  # step results and logs
    scratch: Path  # shards, runs, exports (large; removed at the end)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)

    @property
    def dry(self) -> bool:
        return self.mode == "dry"

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record a pass/fail check; a failed one makes the step exit non-zero (after writing its figures)."""
        self.figures.setdefault("checks", {})[name] = {"ok": bool(ok), "detail": detail}
        if not ok:
            self.failed_checks.append(name)
        progress(f"  check {name}: {'PASS' if ok else 'FAIL'} {detail}")
        return ok

    def write(self, name: str) -> Path:
        out = self.work / "steps" / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"name": name, "mode": self.mode, "figures": self.figures, "notes": self.notes},
                                  indent=1, default=_jsonable))
        return out


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return str(x)


def progress(msg: str) -> None:
    print(f"[gpu_check] {msg}", flush=True)


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall seconds of `repeats` calls after `warmup` calls (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def peak_bf16(device: str) -> tuple[float | None, str]:
    """(dense bf16 peak FLOP/s, how it was chosen) for MFU; None on CPU."""
    if device != "cuda":
        return None, "no MFU on CPU"
    import torch

    from pl_modules.callbacks import peak_flops

    peak = peak_flops(torch.device("cuda"))
    if peak is not None:
        return peak, f"{torch.cuda.get_device_name()}: {peak / 1e12:.0f} TFLOP/s dense bf16 (datasheet)"
    return H100_PEAK_BF16, f"{torch.cuda.get_device_name()} not in the peak table: H100 SXM's 989 TFLOP/s used"


def reset_peak_memory(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**30


def read_step(work: Path, name: str) -> dict[str, Any]:
    f = work / "steps" / f"{name}.json"
    return json.loads(f.read_text()) if f.is_file() else {}
