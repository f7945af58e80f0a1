#!/bin/bash
# Data preparation as a SLURM array job: task i prepares slice i of N (deterministic, resumable).
#
#   sbatch --array=0-31 sbatch/prepare.sh dataset=mead input=/data/MEAD output=/data/shards/mead \
#          face_model_dir=/weights/liveportrait
#
# then, once every task has finished (or as a dependent job), build manifest.json + stats.json:
#
#   jid=$(sbatch --parsable --array=0-31 sbatch/prepare.sh dataset=mead input=... output=... face_model_dir=...)
#   sbatch --dependency=afterany:${jid} --gpus-per-task=0 --cpus-per-task=1 sbatch/prepare.sh --merge \
#          dataset=mead input=/data/MEAD output=/data/shards/mead
#
# afterany (not afterok): a task whose items failed exits 1 but its slice is complete; merge itself
# refuses incomplete or missing slices and names them, and rerunning a task resumes it.
# Site specifics (module loads, conda/venv activation, scratch paths) go in sbatch/site.env
# (git-ignored), sourced if present. The slice index/count come from SLURM_ARRAY_TASK_ID/MIN/COUNT.
#SBATCH --job-name=prepare
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=16            # num_workers below uses all but one of them
#SBATCH --gpus-per-task=1             # motion extraction (LivePortrait M) and optional SyncNet
#SBATCH --mem=64G
#SBATCH --time=12:00:00
#SBATCH --requeue                     # a requeued task resumes from its ledger
#SBATCH --open-mode=append
#SBATCH --output=%x-%A_%a.out
set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
if [ -f sbatch/site.env ]; then  # with `set -u` lifted: site scripts often read unset variables
    set +u
    # shellcheck disable=SC1091
    source sbatch/site.env
    set -u
fi

CONFIG=${CONFIG:-configs/prepare.yaml}
WORKERS=$(( ${SLURM_CPUS_PER_TASK:-2} > 1 ? ${SLURM_CPUS_PER_TASK:-2} - 1 : 1 ))
export OMP_NUM_THREADS=1              # CPU work is parallel across worker processes, not threads

echo "prepare: array task ${SLURM_ARRAY_TASK_ID:-none} of ${SLURM_ARRAY_TASK_COUNT:-1} on $(hostname), ${WORKERS} workers"
exec playmate prepare "${CONFIG}" --num-workers "${WORKERS}" "$@"
