#!/usr/bin/env bash
# usage: [OUT_ROOT=runs/q5] bash row.sh NAME [overrides...]  -- resnet18 64 px, 3 folds, 40 epochs, two-stage (3000 synth x 8 epochs)
name=$1; shift
out=${OUT_ROOT:-runs/q5}
mkdir -p "$out"
SMALL=(model.name=resnet18 data.image_size=64 train.epochs=40 schedule.warmup_epochs=3 'train.mixed_precision="no"'
       train.channels_last=false tracking.backends=[] train.progress=false data.num_workers=0 checkpoint.keep_last=0
       checkpoint.every_epochs=1000 eval.confusion_every_epochs=1000 data.resize=stretch
       pretrain.synth_n=3000 pretrain.epochs=8 pretrain.batch_size=32 pretrain.val_fraction=0.2)
OMP_NUM_THREADS=${THREADS:-1} .venv/bin/checkbox-dist cv --config configs/checkbox_state_v2.yaml --folds 3 "${SMALL[@]}" "$@" \
  --out "$out/$name" > "$out/$name.log" 2>&1
