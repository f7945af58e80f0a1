#!/bin/bash
# Stage zero (motion-decoupling fine-tune of the face model, docs/stage-zero.md) on SLURM:
#   sbatch sbatch/stage0.sh stage0.face_model_dir=pretrained_weights/liveportrait \
#       stage0.vgg_weights=pretrained_weights/vgg19-dcbb9e9d.pth [key=value ...]
# (or FACE_MODEL_DIR / VGG19_WEIGHTS exported in the submitting environment). Then `playmate export` the run
# and `playmate shards reextract` every training dataset with the export before stage one.
# One task per GPU; nodes and devices come from SLURM (never typed twice). SIGUSR1 arrives
# 10 minutes before the time limit → checkpoint at a step boundary on all ranks → requeue →
# the same command resumes from runs/<name>/checkpoints/ (the newest checkpoint that loads),
# continuing the same W&B run. The log goes to the submission directory, linked into the run directory.
#SBATCH --job-name=playmate-stage0
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
CONFIG=${CONFIG:-configs/stage0.yaml}
if [ -n "${VGG19_WEIGHTS:-}" ]; then set -- "stage0.vgg_weights=${VGG19_WEIGHTS}" "$@"; fi
if [ -n "${FACE_MODEL_DIR:-}" ]; then set -- "stage0.face_model_dir=${FACE_MODEL_DIR}" "$@"; fi
source sbatch/_train.sh
