#!/bin/bash
# Shared body of sbatch/stage1.sh and sbatch/stage2.sh (sourced; not submitted on its own).
# Expects CONFIG and EXPERIMENT; passes the submitting command's extra arguments as overrides.
# Site specifics (module load, conda activate, DATA_ROOT, WANDB_API_KEY …) live outside git.
[ -f sbatch/site.env ] && source sbatch/site.env
export MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
export NCCL_DEBUG=${NCCL_DEBUG:-WARN} TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONFAULTHANDLER=1 PLAYMATE_PROGRESS=0
RUN_DIR=${RUN_DIR:-runs/${EXPERIMENT}}               # stable across requeues: resume lives here
mkdir -p logs "$RUN_DIR"
export WANDB_DIR="$RUN_DIR"
srun --kill-on-bad-exit=1 --wait=60 python -u -m pl_modules.commands train "$CONFIG" \
  name="$EXPERIMENT" run_dir="$RUN_DIR" \
  trainer.num_nodes="${SLURM_NNODES:-1}" trainer.devices="${SLURM_NTASKS_PER_NODE:-1}" "$@"
