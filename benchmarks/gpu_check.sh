#!/usr/bin/env bash
# GPU check (issue 16): the figures a GPU session must bring back, in one command of under 8 minutes on one
# H100/H200, each step in its own process with its own timeout, a failing step recorded and the rest run.
#
#   benchmarks/gpu_check.sh                  # on the GPU machine (see below for the wheels it needs)
#   benchmarks/gpu_check.sh --cpu-dry-run    # the same code paths, tiny preset, on CPU (a test runs this)
#
# Writes $OUT/gpu_check.json (figures), $OUT/gpu_check.md (a section for benchmarks/RESULTS.md) and
# $OUT/gpu_check_logs.txt (the end of every step's log); without $OUT, into benchmarks/. Shards, runs and
# exports live in a temporary work directory that is removed at the end (GPU_CHECK_KEEP=1 keeps it).
# Needs no network. Steps: env, data, DeepSpeed ZeRO-2 bf16 training of B (+ resume, export), the training
# step alone (batch sweep, MFU, profiler top ops), sampling, face model, DDP bf16 (+ resume, export),
# Fréchet GPU vs CPU, S3FD (when models/s3fd.py exists), pytest -m "gpu or deepspeed", L, compiled blocks.
# GPU_CHECK_BUDGET_S (default 460) bounds the whole run: a step gets min(its cap, what is left); the steps
# run most important first, so a tight budget drops L, the compiled blocks and the DDP resume.
#
# The GPU machine's image lacks some of our packages (DeepSpeed, webdataset, OmegaConf, ...): run
# benchmarks/gpu_wheels.sh here first; it puts wheels into .whl/, which this script installs when present
# (carry .whl with the call).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
MODE=gpu
for arg in "$@"; do
  case "$arg" in
    --cpu-dry-run) MODE=dry ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (use --cpu-dry-run or nothing)" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-$(command -v python3 || command -v python)}"
OUTDIR="${OUT:-$ROOT/benchmarks}"
mkdir -p "$OUTDIR"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
cleanup() { if [[ "${GPU_CHECK_KEEP:-0}" == 1 ]]; then echo "[gpu_check] work dir kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
mkdir -p "$WORK/status" "$WORK/steps" "$WORK/logs" "$WORK/scratch"
if [[ "$MODE" == dry ]]; then BUDGET="${GPU_CHECK_BUDGET_S:-240}"; else BUDGET="${GPU_CHECK_BUDGET_S:-460}"; fi
START=$(date +%s)
RESERVE=5   # seconds kept for the last report
MIN_STEP=20 # a step is not started with less than this left

export PLAYMATE_PROGRESS=0 WANDB_MODE=disabled HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false PYTHONDONTWRITEBYTECODE=1
[[ "$MODE" == dry ]] && export OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=""
if compgen -G "$ROOT/.whl/*.whl" > /dev/null; then  # packages the GPU image lacks (benchmarks/gpu_wheels.sh)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$ROOT"/.whl/*.whl \
    > "$WORK/logs/wheels.log" 2>&1 && export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}" \
    || echo "[gpu_check] installing .whl/ failed: see gpu_check_logs.txt"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
printf '{"mode": "%s", "started": "%s", "budget_s": %s, "python": "%s"}\n' "$MODE" "$(date -u +%FT%TZ)" "$BUDGET" \
  "$PY" > "$WORK/meta.json"

progress() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*"; }
report() { "$PY" "$ROOT/benchmarks/gpu_check/check_report.py" --work "$WORK" --out "$OUTDIR" \
  >> "$WORK/logs/report.log" 2>&1 || progress "report failed (see $WORK/logs/report.log)"; }
record() {  # name status rc seconds timeout reason
  printf '{"name": "%s", "status": "%s", "rc": %s, "seconds": %s, "timeout_s": %s, "reason": "%s"}\n' \
    "$1" "$2" "$3" "$4" "$5" "$6" > "$WORK/status/$1.json"
  echo "$1" >> "$WORK/order.txt"
}
FAILED=0
run_step() {  # name cap_seconds command...
  local name=$1 cap=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) - RESERVE ))
  if (( left < MIN_STEP )); then
    progress "$name: skipped (time budget of ${BUDGET}s spent)"
    record "$name" skipped 0 0 0 "time budget spent"; report; return
  fi
  local t=$(( cap < left ? cap : left ))
  progress "$name: start (timeout ${t}s)"
  local t0; t0=$(date +%s)
  timeout --kill-after=15 "$t" "$@" > "$WORK/logs/$name.log" 2>&1
  local rc=$? status
  case $rc in 0) status=ok ;; 3) status="checks failed" ;; 124|137) status=timeout ;; *) status=failed ;; esac
  local secs=$(( $(date +%s) - t0 ))
  record "$name" "$status" "$rc" "$secs" "$t" ""
  progress "$name: $status (${secs}s)"
  if [[ "$status" != ok ]]; then FAILED=1; tail -n 12 "$WORK/logs/$name.log" | sed 's/^/    | /'; fi
  report
}
skip_step() { record "$1" skipped 0 0 0 "$2"; progress "$1: skipped ($2)"; report; }
py_step() {  # name cap kind [args]: a step of benchmarks/gpu_check/steps.py
  local name=$1 cap=$2 kind=$3; shift 3
  run_step "$name" "$cap" "$PY" "$ROOT/benchmarks/gpu_check/steps.py" "$kind" --name "$name" --mode "$MODE" \
    --work "$WORK" --scratch "$WORK/scratch" "$@"
}

progress "mode $MODE, budget ${BUDGET}s, python $PY, outputs in $OUTDIR"
py_step env 90 env
py_step data 120 data
py_step train_B_deepspeed_stage_2 170 train --preset B --strategy deepspeed_stage_2
py_step resume_B_deepspeed_stage_2 150 resume --preset B --strategy deepspeed_stage_2
py_step profile_B 120 profile --preset B
if [[ "$MODE" == dry ]]; then
  skip_step train_B_ddp "dry run: the DeepSpeed row above already ran the ddp/gloo path"
else
  py_step train_B_ddp 120 train --preset B --strategy ddp
fi
py_step sampling 120 sampling
py_step face 150 face
mapfile -t MARKED < <(grep -rlE "pytest\.mark\.(gpu|deepspeed)" tests --include='*.py' | sort)
run_step pytest 150 "$PY" -m pytest -m "gpu or deepspeed" -q -p no:cacheprovider --junitxml="$WORK/pytest.xml" \
  "${MARKED[@]}"
py_step frechet 60 frechet
py_step s3fd 60 s3fd
if [[ "$MODE" == dry ]]; then  # the rest only when time is left, most useful first
  skip_step train_L_deepspeed_stage_2 "dry run: the same code path as B"
  skip_step compile_B "dry run: inductor compiles for minutes on CPU (tests cover the wrapping with backend=eager)"
  skip_step resume_B_ddp "dry run: the DeepSpeed row above already ran the ddp/gloo path"
else
  py_step train_L_deepspeed_stage_2 150 train --preset L --strategy deepspeed_stage_2
  py_step compile_B 150 compile --preset B
  py_step resume_B_ddp 100 resume --preset B --strategy ddp
fi
report
progress "done: $OUTDIR/gpu_check.json, gpu_check.md, gpu_check_logs.txt"
"$PY" - "$OUTDIR/gpu_check.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for name, s in d["steps"].items():
    print(f"  {name:32s} {s.get('status', '?'):14s} {s.get('seconds', 0):>5}s")
EOF
exit $FAILED
