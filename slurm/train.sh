#!/usr/bin/env bash
# Multi-node training on Slurm: one `accelerate launch` per node, each starting one process per GPU.
#
#   sbatch slurm/train.sh                                        # configs/checkbox_state_v2.yaml, 2 nodes x 8 GPUs
#   sbatch --nodes=4 --gpus-per-node=4 slurm/train.sh --config configs/checkbox_state_v2.yaml train.epochs=300
#   CHECKBOX_DIST_CPU=1 sbatch --gpus-per-node=0 slurm/train.sh --config C ...   # CPU nodes (gloo), see below
#
# Submit from the repository root (sbatch copies this file into Slurm's spool, so the code is found
# through SLURM_SUBMIT_DIR, or CHECKBOX_DIST_REPO); `.venv` there is activated when present, else
# `accelerate` must be on PATH (sbatch passes the submitting shell's environment).
#
# Preemption and time limits: 120 s before the end Slurm sends USR1 to this script (B: = the batch
# shell only: torchrun would die of a USR1). The script touches RUN/STOP, which every rank on every node
# sees at its next log interval (train.log_every_steps): they agree, save checkpoints/last and exit;
# then the script requeues the job (`scontrol requeue`). The job keeps its id, so the restarted job
# (SLURM_RESTART_COUNT=1, 2, ...) finds the same run folder, runs/slurm-<jobid> unless
# train.output_dir is given, and `train.resume=auto` continues from `last`: same weights as a run
# that was never interrupted. Output of all restarts goes to one file, %x-%j.out (--open-mode=append).
# Preemption with a GraceTime sends SIGTERM to every process of the job's steps instead (not to this
# shell): the ranks take it as the same stop request (torchrun's agent gives them 30 s for it:
# TORCH_ELASTIC_SHUTDOWN_TIMEOUT), each node's step shell notes it in RUN/.step_sigterm, and this script
# requeues as for USR1. A SIGTERM to this shell too (`scancel --full`, the time limit itself) cannot be
# saved: srun answers it with SIGKILL to its step (the job still requeues, from an older `last` if any).
#
# Elastic requeue: with train.global_batch_size in the config (configs/checkbox_state_v2.yaml has it), a
# restart may run on another number of nodes and continues the same recipe from the same image of the
# epoch (docs/LAUNCH.md, "Elastic resume"). Submit a node range with as many tasks as the largest shape:
#   sbatch --nodes=1-2 --ntasks=2 --spread-job slurm/train.sh ...
# starts on 2 nodes when both are free and, requeued after the cluster lost one, on 1. (A bare
# --nodes=1-2 starts on one node at once; --ntasks-per-node would keep the job waiting for both.)
#
# Environment knobs: CHECKBOX_DIST_CPU=1 trains on CPUs with gloo (ACCELERATE_USE_CPU=true, the one CPU
# recipe that gives a real multi-process world: launch/cpu_2proc.yaml); CHECKBOX_DIST_PROCS_PER_NODE
# overrides the processes per node (default: the node's GPUs, SLURM_GPUS_ON_NODE; 1 on CPU);
# CHECKBOX_DIST_PORT fixes the rendezvous port (default: a free port on the first node).
#SBATCH --job-name=checkbox-dist
#SBATCH --nodes=2
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
set -euo pipefail

say() { echo "$(date '+%F %T') slurm/train.sh: $*"; }

REPO=${CHECKBOX_DIST_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
cd "$REPO"
# shellcheck source=slurm/common.sh
source "$REPO/slurm/common.sh"

parse_config_args "$@"
RUN_DIR=runs/slurm-${SLURM_JOB_ID:?not inside a Slurm job: submit with sbatch}
for o in "${OVERRIDES[@]+"${OVERRIDES[@]}"}"; do
    case "$o" in train.output_dir=*) RUN_DIR=${o#train.output_dir=} ;; esac
done
OVERRIDES+=("train.output_dir=$RUN_DIR" "train.resume=auto")
mkdir -p "$RUN_DIR"
rm -f "$RUN_DIR/STOP" "$RUN_DIR/.step_sigterm"  # left by the previous start of this job, if it was preempted

NNODES=${SLURM_NNODES:-1}
if [ -n "${CHECKBOX_DIST_CPU:-}" ] && [ "${CHECKBOX_DIST_CPU}" != 0 ]; then
    export ACCELERATE_USE_CPU=true
    PROCS_PER_NODE=${CHECKBOX_DIST_PROCS_PER_NODE:-1}
else
    PROCS_PER_NODE=${CHECKBOX_DIST_PROCS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
fi
TOTAL=$((NNODES * PROCS_PER_NODE))
# The first node of the allocation hosts the rendezvous. Its NodeAddr is what the other nodes can reach
# (node names need not resolve); this script runs on that node, so a free port is probed here.
MAIN_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_ADDR=$(scontrol show node "$MAIN_NODE" -o | tr ' ' '\n' | sed -n 's/^NodeAddr=//p')
MAIN_ADDR=${MAIN_ADDR:-$MAIN_NODE}
MAIN_PORT=${CHECKBOX_DIST_PORT:-$("$(command -v python || command -v python3)" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')}
LAUNCH_CONFIG=launch/multi_node.yaml
[ "$TOTAL" -gt 1 ] || LAUNCH_CONFIG=launch/single_gpu.yaml  # MULTI_GPU configs refuse one process
# srun (Slurm >= 22.05) does not take sbatch's --cpus-per-task (SLURM_CPUS_PER_TASK): without it, the
# one launcher task per node, all its ranks and their loader workers are bound to a single CPU. Each
# launcher gets all the CPUs the job holds on a node (the fewest, if the nodes differ: "64(x2),32").
STEP_CPUS=$(tr ',' '\n' <<<"${SLURM_JOB_CPUS_PER_NODE:-}" | sed 's/(.*//' | { grep -E '^[0-9]+$' || true; } \
    | sort -n | head -n 1)
STEP_CPUS=${STEP_CPUS:-${SLURM_CPUS_PER_TASK:-}}
export CONFIG NNODES TOTAL MAIN_ADDR MAIN_PORT LAUNCH_CONFIG RUN_DIR
say "job ${SLURM_JOB_ID} start $((${SLURM_RESTART_COUNT:-0} + 1)) (SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0}):" \
    "$NNODES node(s) ${SLURM_JOB_NODELIST} x $PROCS_PER_NODE = $TOTAL processes, main $MAIN_ADDR:$MAIN_PORT," \
    "run folder $RUN_DIR, ${STEP_CPUS:-default} CPU(s) per launcher${ACCELERATE_USE_CPU:+, CPU (gloo)}"

preempted=""
on_signal() {
    preempted=$1
    say "got SIG$1: asking every rank to checkpoint and stop (touch $RUN_DIR/STOP)"
    touch "$RUN_DIR/STOP"
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM

# Single quotes: SLURM_NODEID must expand inside each task (0 on the first node, 1 on the next, ...),
# not here in the batch shell, where it is 0 for everyone and every node would claim machine rank 0.
# One launcher per node, whatever task count the allocation has (--ntasks for an elastic range, above).
# `--mixed_precision no`: the training config's train.mixed_precision decides (a launch file's own precision
# would win over it: docs/LAUNCH.md), as the user chose it there, not in the launch file this script picks.
# The task's shell stays (no exec) to note a SIGTERM to the step; the launcher ignores it unless it
# handles it itself (torchrun's agent does): a single process (`accelerate launch` without torchrun)
# would die of it and leave train.py, which saves on it, to be killed with the step.
srun --nodes="$NNODES" --ntasks="$NNODES" --ntasks-per-node=1 ${STEP_CPUS:+--cpus-per-task="$STEP_CPUS"} \
    --kill-on-bad-exit=1 bash -c '
    trap "echo \"\${SLURMD_NODENAME:-node \$SLURM_NODEID}\" >>\"\$RUN_DIR/.step_sigterm\"" TERM
    ( trap "" TERM
      exec accelerate launch --config_file "$LAUNCH_CONFIG" --num_machines "$NNODES" --num_processes "$TOTAL" \
        --machine_rank "$SLURM_NODEID" --main_process_ip "$MAIN_ADDR" --main_process_port "$MAIN_PORT" \
        --mixed_precision no train.py --config "$CONFIG" "$@" ) &
    launcher=$!
    while :; do wait "$launcher"; rc=$?; kill -0 "$launcher" 2>/dev/null || exit "$rc"; done' bash "${OVERRIDES[@]}" &
srun_pid=$!
set +e
while :; do
    wait "$srun_pid"
    rc=$?
    # A trapped signal interrupts `wait` (rc > 128) while srun still runs: wait again.
    kill -0 "$srun_pid" 2>/dev/null || break
done
set -e
if [ -z "$preempted" ] && [ -f "$RUN_DIR/.step_sigterm" ] && [ "$rc" != 0 ]; then  # 0: it had finished
    preempted=TERM
    say "the step got SIGTERM (preemption) on $(sort -u "$RUN_DIR/.step_sigterm" | paste -sd ' ')"
fi
rm -f "$RUN_DIR/.step_sigterm"

if [ -n "$preempted" ]; then
    trap - USR1 TERM
    if [ -f "$RUN_DIR/checkpoints/last/meta.json" ]; then
        say "training stopped (exit $rc) with $RUN_DIR/checkpoints/last; requeueing job $SLURM_JOB_ID"
    else
        say "training stopped (exit $rc) before any checkpoint; requeueing job $SLURM_JOB_ID to start over"
    fi
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
rm -f "$RUN_DIR/STOP"
say "training finished with exit code $rc"
exit "$rc"
