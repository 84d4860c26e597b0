#!/usr/bin/env bash
# A hyperparameter sweep as a Slurm job array: array task i runs trial i, one GPU each.
#
#   checkbox-dist sweep --space S --config C --folds 5 --trials 12 --runner slurm --out runs/sweep1
#   sbatch --array=0-11 slurm/sweep.sh runs/sweep1/trials.txt runs/sweep1          # what it prints
#   sbatch --array=0-3 slurm/sweep.sh my_trials.txt runs/sweep2 --config C [section.key=value ...]
#
# TRIALS holds one trial per line: space-separated `section.key=value` overrides. Task i takes line i
# (0-based, as `checkbox-dist sweep` numbers trials) and writes OUT/trial_<i>:
#   - OUT/sweep.json present (written by `checkbox-dist sweep`): `checkbox-dist sweep --run-trial i
#     --out OUT`, i.e. a cross-validated trial with the sweep's config, folds and base overrides;
#   - otherwise: `checkbox-dist train --config C <line i> [extra overrides] train.output_dir=OUT/trial_<i>
#     train.resume=auto` (C defaults to configs/checkbox_state_v2.yaml).
# Preemption as in slurm/train.sh: USR1 120 s before the end -> a `train` trial checkpoints (USR1 and
# RUN/STOP) -> the task requeues itself and resumes; a cross-validated trial is requeued at once. Submit from the repository root (SLURM_SUBMIT_DIR is the code);
# `.venv` there is activated when present. Without Slurm, SLURM_ARRAY_TASK_ID=3 bash slurm/sweep.sh ...
# runs one task in the foreground.
#SBATCH --job-name=checkbox-sweep
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=08:00:00
#SBATCH --output=%x-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
set -euo pipefail

say() { echo "$(date '+%F %T') slurm/sweep.sh: $*"; }
usage="usage: sbatch --array=0-<N-1> slurm/sweep.sh TRIALS OUT [--config C] [section.key=value ...]"

REPO=${CHECKBOX_DIST_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
cd "$REPO"
# shellcheck source=slurm/common.sh
source "$REPO/slurm/common.sh"
TRIALS=${1:?$usage}
OUT=${2:?$usage}
shift 2
parse_config_args "$@"
I=${SLURM_ARRAY_TASK_ID:?not an array task: sbatch --array=0-<N-1> ..., or set SLURM_ARRAY_TASK_ID}
[ -f "$TRIALS" ] || { echo "error: trials file not found: $TRIALS" >&2; exit 2; }
N=$(wc -l <"$TRIALS")
# Line I, 0-based; `read -a` splits on spaces and keeps quotes ("#000000") for the YAML override parser.
[ "$I" -lt "$N" ] || { echo "error: task $I but $TRIALS has trials 0..$((N - 1))" >&2; exit 2; }
read -r -a WORDS < <(sed -n "$((I + 1))p" "$TRIALS")
RUN_DIR=$OUT/trial_$I
mkdir -p "$RUN_DIR"
rm -f "$RUN_DIR/STOP"
if [ -f "$OUT/sweep.json" ]; then
    CMD=(checkbox-dist sweep --run-trial "$I" --out "$OUT")
else
    CMD=(checkbox-dist train --config "$CONFIG" "${WORDS[@]+"${WORDS[@]}"}" "${OVERRIDES[@]+"${OVERRIDES[@]}"}"
         "train.output_dir=$RUN_DIR" "train.resume=auto")
fi
say "task $I (restart ${SLURM_RESTART_COUNT:-0}): ${WORDS[*]:-(base config)} -> $RUN_DIR"

preempted=""
on_signal() {
    preempted=$1
    if [ -f "$OUT/sweep.json" ]; then
        # A cross-validated trial is a chain of processes with no checkpoint of its own: requeue now;
        # the restarted task reruns the trial (`sweep --run-trial` skips trials already finished).
        say "got SIG$1: requeueing trial $I"
        trap - USR1 TERM
        scontrol requeue "${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_$I"
        exit 0
    fi
    say "got SIG$1: checkpointing trial $I"
    touch "$RUN_DIR/STOP"
    kill -USR1 "$child" 2>/dev/null || true  # `train` saves on USR1 too (a single process: no rendezvous)
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM
"${CMD[@]}" &
child=$!
set +e
while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break
done
set -e
if [ -n "$preempted" ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    trap - USR1 TERM
    say "trial $I stopped (exit $rc); requeueing ${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_$I"
    scontrol requeue "${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_$I"
    exit 0
fi
rm -f "$RUN_DIR/STOP"
say "trial $I finished with exit code $rc"
exit "$rc"
