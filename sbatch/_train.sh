#!/bin/bash
# Shared body of sbatch/stage{0,1,2}.sh (sourced; not submitted on its own).
# Expects CONFIG; passes the submitting command's extra arguments as overrides (name=… picks the run
# directory runs/<name>: one per experiment; resuming it with another config is refused, naming the keys).
# Site specifics (module load, conda activate, DATA_ROOT, WANDB_API_KEY …) live in the git-ignored
# sbatch/site.env, sourced when present (with `set -u` lifted: site scripts often read unset variables).
if [ -f sbatch/site.env ]; then set +u; source sbatch/site.env; set -u; fi
# SLURM ≥ 22.05 stopped passing --cpus-per-task from sbatch to srun: without this each rank gets one CPU.
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK; fi
# Rendezvous: Lightning's SLURM environment takes the ranks from SLURM_PROCID/SLURM_LOCALID/SLURM_NODEID
# and MASTER_ADDR from the first host of SLURM_NODELIST; the port is ours (its default can collide).
export MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
export NCCL_DEBUG=${NCCL_DEBUG:-WARN} TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONFAULTHANDLER=1 PLAYMATE_PROGRESS=0
# The resolved run directory (the config is validated here, before any GPU is taken).
RUN_DIR=$(python -m pl_modules.commands config "$CONFIG" "$@" --key run_dir)
mkdir -p "$RUN_DIR"
export WANDB_DIR="$RUN_DIR"
LOG="${SLURM_SUBMIT_DIR:-$PWD}/${SLURM_JOB_NAME:-train}-${SLURM_JOB_ID:-0}.out"
[ -f "$LOG" ] && ln -sf "$LOG" "$RUN_DIR/$(basename "$LOG")"
echo "[sbatch] job ${SLURM_JOB_ID:-?}: $CONFIG $* → run directory $RUN_DIR (log: $LOG)"
srun --kill-on-bad-exit=1 --wait=60 python -u -m pl_modules.commands train "$CONFIG" \
  trainer.num_nodes="${SLURM_NNODES:-1}" trainer.devices="${SLURM_NTASKS_PER_NODE:-1}" "$@"
