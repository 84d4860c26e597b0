#!/usr/bin/env bash
# The CPU proxy of docs/RESULTS.md: 3-fold CV of configs/checkbox_state_v2.yaml with ResNet18 at 64 px, a 40-epoch
# fine-tune and a small stage one (3,000 synthetic images x 8 epochs, batch 32; override pretrain.synth_n /
# pretrain.epochs for the 12,000 x 16 rows), on the config's data.root (../shared/checkbox_state_v2/train).
# Run from the repository root:
#   [OUT_ROOT=runs/proxy] [THREADS=1] [CV_OPTS="--selection best ..."] bash benchmarks/cv_proxy.sh NAME [section.key=value ...]
# (CV_OPTS: `checkbox-dist cv` options; the overrides come last and win over the proxy's) writes OUT_ROOT/NAME (cv_summary.json, oof_predictions.csv) and OUT_ROOT/NAME.log.
set -euo pipefail
name=$1; shift
out=${OUT_ROOT:-runs/proxy}
mkdir -p "$out"
SMALL=(model.name=resnet18 data.image_size=64 train.epochs=40 schedule.warmup_epochs=3 'train.mixed_precision="no"'
       train.channels_last=false tracking.backends=[] train.progress=false data.num_workers=0 checkpoint.keep_last=0
       checkpoint.every_epochs=1000 eval.confusion_every_epochs=1000 data.resize=stretch
       pretrain.synth_n=3000 pretrain.epochs=8 pretrain.batch_size=32 pretrain.global_batch_size=32
       pretrain.val_fraction=0.2)
OMP_NUM_THREADS=${THREADS:-1} ${CHECKBOX_DIST:-.venv/bin/checkbox-dist} cv --config configs/checkbox_state_v2.yaml \
  --folds 3 ${CV_OPTS:-} "${SMALL[@]}" "$@" --out "$out/$name" > "$out/$name.log" 2>&1
