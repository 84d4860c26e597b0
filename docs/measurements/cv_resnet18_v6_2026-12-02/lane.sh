#!/usr/bin/env bash
# usage: bash docs/measurements/cv_resnet18_v6_2026-12-02/lane.sh SEED STAGE_DIR -- waits for base_sSEED, then runs the fine-tune rows on that stage one
seed=$1; stage=$2
while [ ! -f runs/q11/base_s$seed/cv_summary.json ]; do sleep 30; done
row() { name=$1; shift; OUT_ROOT=runs/q11 bash docs/measurements/cv_resnet18_v2_2026-12-01/row.sh ${name}_s$seed \
  pretrain.synth_n=12000 pretrain.epochs=16 pretrain.synth_seed=$seed pretrain.output_dir=$stage "$@"; }
row ema train.ema_decay=0.99
