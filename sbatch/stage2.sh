#!/bin/bash
# Stage two (emotion controller, frozen stage-one DiT) on SLURM (docs/training.md):
#   sbatch sbatch/stage2.sh stage2.init_from=runs/stage1/export [key=value ...]
# One task per GPU; nodes and devices come from SLURM (never typed twice). SIGUSR1 arrives
# 10 minutes before the time limit → checkpoint at a step boundary on all ranks → requeue →
# the same command resumes from runs/<name>/checkpoints/last.ckpt, continuing the same W&B run.
#SBATCH --job-name=playmate-stage2
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --gpus-per-node=2
#SBATCH --cpus-per-task=10
#SBATCH --mem=0
#SBATCH --time=24:00:00
#SBATCH --signal=SIGUSR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=logs/%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
CONFIG=${CONFIG:-configs/stage2.yaml}
EXPERIMENT=${EXPERIMENT:-stage2}
source sbatch/_train.sh
