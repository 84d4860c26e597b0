#!/usr/bin/env bash
# usage: bash docs/measurements/cv_resnet18_v7_2026-12-03/lane.sh SEED -- the ResNet18 proxy (v4 generator, 12,000 x 16-epoch
# stage one on synthetic seed SEED, trained once by the first row into runs/q12/stage_sSEED), then paired fine-tune rows on it
seed=$1
row() { name=$1; shift; OUT_ROOT=runs/q12 bash docs/measurements/cv_resnet18_v2_2026-12-01/row.sh ${name}_s$seed \
  pretrain.synth_n=12000 pretrain.epochs=16 pretrain.synth_seed=$seed pretrain.output_dir=runs/q12/stage_s$seed "$@"; }
row base
row mixup train.mixup_alpha=0.2
row cutmix train.cutmix_alpha=1.0
