#!/usr/bin/env bash
# The refit rows of docs/RESULTS.md (which model to ship): nested 3-fold CV of the CPU proxy (benchmarks/cv_proxy.sh),
# one shared stage one, one run after the other, then the table. Run from the repository root (~50 min on 2 cores):
#   bash benchmarks/refit.sh [OUT]          # OUT defaults to runs/refit
#   (a) today's model: 80 % + the best epoch on an inner 20 % (cv --inner-val 0.2 --selection best)
#   (b) a refit on every image of the outer training part, final weights, train.seed 42, 1, 2, 3, 4
#   (c) OOF ensembles of the first k refits (printed by benchmarks/refit_table.py)
set -euo pipefail
export OUT_ROOT=${1:-runs/refit}
row() { bash benchmarks/cv_proxy.sh "$@" "pretrain.output_dir=$OUT_ROOT/stage1"; }
CV_OPTS="--inner-val 0.2 --selection best" row a_inner20_best
CV_OPTS="--selection final" row b_refit_s42
for s in 1 2 3 4; do CV_OPTS="--selection final" row "b_refit_s$s" "train.seed=$s"; done
${PYTHON:-.venv/bin/python} benchmarks/refit_table.py "$OUT_ROOT"
