#!/bin/bash
# Offline evaluation report on one GPU (docs/evaluation.md):
#   sbatch sbatch/evaluate.sh CKPT [CKPT ...] --data SHARDS [--out DIR] [--face-model DIR]
#          [--i3d PATH] [--syncnet PATH] [--feature-net PATH] [--arcface PATH] [--max-clips N]
# e.g. sbatch sbatch/evaluate.sh runs/stage1/checkpoints/step*.ckpt --data "$DATA_ROOT/val" \
#        --face-model "$WEIGHTS/liveportrait" --i3d "$WEIGHTS/i3d_pretrained_400.pt" --out runs/stage1/eval
# Every argument goes to `playmate evaluate` unchanged. Weights and data paths come from the command
# line or sbatch/site.env (outside git); nothing site-specific is written here. One process, one GPU:
# evaluation is a single pass over a fixed clip list, so no ranks and no duplicated clips.
#SBATCH --job-name=playmate-evaluate
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=04:00:00
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
if [ -f sbatch/site.env ]; then set +u; source sbatch/site.env; set -u; fi
if [ "$#" -eq 0 ]; then
  echo "usage: sbatch sbatch/evaluate.sh CKPT [CKPT ...] --data SHARDS [options of playmate evaluate]" >&2
  exit 2
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}} PYTHONFAULTHANDLER=1 PLAYMATE_PROGRESS=0
srun --kill-on-bad-exit=1 python -u -m pl_modules.commands evaluate "$@"
