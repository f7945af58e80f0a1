"""Merge the GPU check's step results into OUT/gpu_check.json, OUT/gpu_check.md (a section for
benchmarks/RESULTS.md) and OUT/gpu_check_logs.txt. Standard library only: it runs after every step, so
whatever has been measured is on disk even if a later step hangs the machine.

    python benchmarks/gpu_check/check_report.py --work DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

MFU_TEXT = (
    "MFU = samples/s × 3 × `MotionDiT.flops_per_sample()` / (GPUs × dense bf16 peak; H100/H200 SXM 989 TFLOP/s). "
    "`flops_per_sample` is the forward FLOPs of one window of Tp + T = 125 frames: 2 × multiply-accumulates of every "
    "matmul and convolution, attention scores and the audio aligner included, norms and activations not; ×3 for "
    "forward + backward. The shards carry precomputed features, so no audio encoder runs in the step (a wav2vec2-base "
    "encoder run in the step would add ≈ 72 GFLOP per window, forward only, which MFU does not count)."
)
EXPORT_CHECKS = ("exported weights = trained weights (cast to the training dtype)",
                 "exported model reproduces the trained outputs", "exported EMA = the fp32 EMA of the callback")
LOG_TAIL = 4000  # characters of each step's log kept in gpu_check_logs.txt


def load(work: Path) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    order = (work / "order.txt").read_text().split() if (work / "order.txt").is_file() else []
    for name in dict.fromkeys(order):  # in the order they ran
        s = json.loads((work / "status" / f"{name}.json").read_text())
        steps[s["name"]] = {**s, "figures": {}, "notes": []}
    for f in sorted((work / "steps").glob("*.json")):
        r = json.loads(f.read_text())
        steps.setdefault(r["name"], {"name": r["name"], "status": "running or killed"})
        steps[r["name"]].update(figures=r.get("figures", {}), notes=r.get("notes", []))
    meta = json.loads((work / "meta.json").read_text()) if (work / "meta.json").is_file() else {}
    junit = work / "pytest.xml"
    if junit.is_file() and "pytest" in steps:
        steps["pytest"]["figures"] = _junit(junit)
    return {"meta": meta, "steps": steps}


def _junit(path: Path) -> dict[str, Any]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        return {"error": f"unreadable junit xml: {e}"}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    cases = []
    for case in suite.iter("testcase"):
        outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time", 0))})
    return {**counts, "cases": cases}


def f(x: Any, spec: str = ".3g", unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        return f"{x:{spec}}{unit}"
    return str(x)


def _checks(fig: dict[str, Any], *names: str) -> str:
    c = fig.get("checks", {})
    got = [("PASS" if c[n]["ok"] else "FAIL") for n in names if n in c]
    return " / ".join(got) if got else "–"


def markdown(data: dict[str, Any]) -> str:
    steps, meta = data["steps"], data["meta"]
    env = steps.get("env", {}).get("figures", {})
    dry = meta.get("mode") == "dry"
    title = "GPU check — CPU DRY RUN (tiny preset; no GPU figure)" if dry else f"GPU check — {env.get('device', '?')}"
    out = [f"## {title}", "",
           f"`benchmarks/gpu_check.sh{' --cpu-dry-run' if dry else ''}`, {meta.get('started', '?')}; "
           f"device {env.get('device', '?')} ({f(env.get('memory_gib'), '.0f')} GiB, "
           f"driver/clock/power {env.get('nvidia_smi') or '–'}); torch {env.get('torch', '?')}, CUDA "
           f"{env.get('cuda') or '–'}, cuDNN {env.get('cudnn') or '–'}, DeepSpeed {env.get('deepspeed') or '–'}, "
           f"Lightning {env.get('lightning') or env.get('pytorch-lightning') or '–'}, Python {env.get('python', '?')}, "
           f"{env.get('cpu_count', '?')} CPUs; commit {str(env.get('git_commit') or '–')[:10]}. Measured bf16 matmul "
           f"(8192³): {f(env.get('bf16_matmul_tflops_measured'), '.0f')} TFLOP/s.", ""]
    if env.get("missing_modules"):
        out += [f"Missing modules: {'; '.join(env['missing_modules'])}", ""]
    out += ["| step | status | seconds | note |", "|---|---|---:|---|"]
    for name, s in steps.items():
        note = s.get("reason") or "; ".join(s.get("notes", [])) or s.get("figures", {}).get("error", "")
        out.append(f"| {name} | {s.get('status', '?')} | {f(s.get('seconds'), '.0f')} | {str(note)[:160]} |")
    train = [s for n, s in steps.items() if n.startswith(("train_", "resume_")) and s.get("figures")]
    if train:
        out += ["", "### Training through `playmate train` (synthetic shards, precomputed log-mel features)", "",
                "| run | strategy | preset | batch/GPU | steps | samples/s | step ms | MFU | peak GiB | "
                "between steps | resume / loss | export: weights / outputs / EMA |", "|---|---|---|---:|---|---:|---:|"
                "---:|---:|---:|---|---|"]
        for s in train:
            g = s["figures"]
            out.append(
                f"| {s['name']} | {g.get('strategy', '?')} | {g.get('preset', '?')} | {g.get('batch', '?')} | "
                f"{g.get('start_step', '?')}→{g.get('end_step', '?')} | {f(g.get('samples_per_s'), '.0f')} | "
                f"{f(g.get('step_ms'), '.1f')} | {f(g.get('mfu'), '.1%')} | {f(g.get('peak_memory_gib'), '.1f')} | "
                f"{f(g.get('between_steps_fraction'), '.0%')} | "
                f"{_checks(g, 'resumed at the saved step', 'loss continues after resume')} | "
                f"{_checks(g, *EXPORT_CHECKS)} |")
        out += ["", MFU_TEXT, "'between steps': share of the timed wall the loop spent outside the step "
                "(fetching the next batch, Lightning bookkeeping); a high share means the data loader starves the GPU."]
    out += _profile(steps)
    out += _inference(steps)
    pt = steps.get("pytest", {}).get("figures", {})
    if pt:
        out += ["", f"### Tests: `pytest -m \"gpu or deepspeed\"`: {pt.get('tests', 0)} collected, "
                f"{pt.get('failures', 0)} failed, {pt.get('errors', 0)} errors, {pt.get('skipped', 0)} skipped", ""]
        out += [f"- {c['test']}: {c['outcome']} ({c['seconds']:.0f} s)" for c in pt.get("cases", [])]
    return "\n".join(out) + "\n"


def _profile(steps: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, s in steps.items():
        g = s.get("figures", {})
        if not name.startswith("profile_") or not g.get("sweep"):
            continue
        out += ["", f"### Training step alone ({name}: {g.get('preset')}, {g.get('features')}, {g.get('precision')}, "
                "AdamW, clipping; no loader, no Lightning)", "", "| batch | step ms | samples/s | MFU | peak GiB |",
                "|---:|---:|---:|---:|---:|"]
        rows = list(g["sweep"])
        if g.get("fused_adamw"):
            rows.append({**g["fused_adamw"], "batch": f"{g['fused_adamw']['batch']} (fused AdamW)"})
        w = g.get("wav2vec2_in_step", {})
        if w.get("samples_per_s"):
            rows.append({**w, "batch": f"{w['batch']} (wav + wav2vec2-base in the step, bf16 autocast; MFU counts "
                                       f"the DiT's {f(w['dit_training_gflop_per_window'], '.1f')} GFLOP/window, "
                                       f"with the encoder's {f(w['encoder_gflop_per_window'], '.1f')}: "
                                       f"{f(w.get('hfu'), '.1%')})"})
        elif w.get("error"):
            out.append(f"wav2vec2 in the step: {w['error']}")
        comp = steps.get(name.replace("profile_", "compile_"), {}).get("figures", {})
        if comp.get("compiled"):
            rows.append({**comp["compiled"], "batch": f"{comp['compiled']['batch']} (compiled blocks; first step "
                                                       f"{f(comp.get('first_step_s'), '.0f')} s)"})
        for r in rows:
            out.append(f"| {r['batch']} | {f(r.get('step_ms'), '.1f')} | {f(r.get('samples_per_s'), '.0f')} | "
                       f"{f(r.get('mfu'), '.1%')} | {f(r.get('peak_memory_gib'), '.1f')} |")
        prof = g.get("profile", {})
        if prof.get("top"):
            out += ["", f"Top ops by {prof['clock']} at batch {g.get('profile_batch')} "
                    f"({f(prof.get('total_ms_per_step'), '.1f')} ms per step):", "",
                    "| op | ms/step | share | calls/step |", "|---|---:|---:|---:|"]
            out += [f"| `{r['op']}` | {f(r['ms_per_step'], '.2f')} | {f(r['share'], '.1%')} | "
                    f"{f(r['calls_per_step'], '.0f')} |" for r in prof["top"]]
    return out


def _inference(steps: dict[str, Any]) -> list[str]:
    out: list[str] = []
    g = steps.get("sampling", {}).get("figures", {})
    if g.get("rows"):
        out += ["", f"### Sampling through `MotionGenerator` ({g['cfg']}, DDIM {g['ddim_steps']}, "
                f"{g['seconds']:g} s of audio per clip, {g['features']})", "",
                "| preset | precision | clips per batch | wall s | seconds of motion per second |",
                "|---|---|---:|---:|---:|"]
        out += [f"| {r['preset']} | {r['precision']} | {r['batch']} | {f(r['wall_s'], '.2f')} | "
                f"{f(r['motion_s_per_s'], '.1f')} |" for r in g["rows"]]
        a = g.get("aligner_once_per_window")
        if a:
            out += ["", f"Aligner once per window vs in every forward ({a['preset']}, batch 1, fp32): "
                    f"{f(a['once_s'], '.2f')} s vs {f(a['every_forward_s'], '.2f')} s "
                    f"({f(a['time_saved'], '.0%')} saved)."]
    g = steps.get("face", {}).get("figures", {})
    if g.get("rows"):
        out += ["", f"### Face model ({g['preset']}, {g['frames_per_call']} frames per call, {g['output']} output)", "",
                "| precision | batch | extract_motion frames/s | render frames/s |", "|---|---:|---:|---:|"]
        out += [f"| {r['precision']} | {r['batch']} | {f(r['extract_fps'], '.1f')} | {f(r['render_fps'], '.1f')} |"
                for r in g["rows"]]
    g = steps.get("s3fd", {}).get("figures", {})
    if g:
        rows = "; ".join(f"batch {r['batch']} at {r['input']}: {f(r['network_fps'], '.0f')} frames/s"
                         for r in g.get("rows", []))
        out += ["", f"### S3FD: {g.get('skipped') or rows or g.get('error', '–')}"]
    g = steps.get("frechet", {}).get("figures", {})
    if g:
        out += ["", f"### Fréchet core, d = {g.get('d')}, float64 symmetric eigh: CPU {f(g.get('cpu_s'), '.2f')} s "
                f"({g.get('cpu_threads')} threads), GPU {f(g.get('gpu_s'), '.3f')} s, speed-up "
                f"{f(g.get('speedup'), '.0f')}×, relative difference {f(g.get('rel_diff'), '.1e')}"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    data = load(a.work)
    data["meta"]["reported"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_check.json").write_text(json.dumps(data, indent=1))
    (a.out / "gpu_check.md").write_text(markdown(data))
    logs = []
    for log in sorted((a.work / "logs").glob("*.log")):
        text = log.read_text(errors="replace")
        logs.append(f"===== {log.name} ({len(text)} chars, last {LOG_TAIL}) =====\n{text[-LOG_TAIL:]}")
    (a.out / "gpu_check_logs.txt").write_text("\n".join(logs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
