#!/bin/bash
# Stage one on a SLURM cluster (docs/training.md):
#   sbatch sbatch/stage1.sh [key=value ...]          e.g. sbatch --nodes=4 sbatch/stage1.sh optim.lr=2e-4
# The config reads the prepared data from $DATA_ROOT and wav2vec2 from $WAV2VEC2_DIR (export both, or
# put them in sbatch/site.env); on CPU with the synthetic world pass setup=synthetic_cpu.
# One task per GPU; nodes and devices come from SLURM (never typed twice). SIGUSR1 arrives
# 10 minutes before the time limit → checkpoint at a step boundary on all ranks → requeue →
# the same command resumes from runs/<name>/checkpoints/ (the newest checkpoint that loads),
# continuing the same W&B run. A new experiment needs its own name: … name=my_experiment.
# The log goes to the submission directory (which exists; SLURM does not create directories) and
# is linked into the run directory.
#SBATCH --job-name=playmate-stage1
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=10
#SBATCH --mem=0
#SBATCH --time=24:00:00
#SBATCH --signal=SIGUSR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
CONFIG=${CONFIG:-configs/stage1.yaml}
source sbatch/_train.sh
