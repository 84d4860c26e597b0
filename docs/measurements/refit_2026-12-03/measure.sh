#!/usr/bin/env bash
# The refit / ensemble comparison of docs/RESULTS.md (2026-12-03, refit): one CV run at a time, one thread.
# usage: CODE=<checkout> PY=<python> bash measure.sh NAME [cv options and overrides...]
# Every run: ResNet18 64 px, 3 folds (split seed 42), 40-epoch fine-tune, stage one 3,000 synthetic x 8 epochs
# (docs/measurements/cv_resnet18_v2_2026-12-01/row.sh), stage one pinned to one folder so every seed shares it.
# pretrain.global_batch_size=32: the stage one of row.sh's rows (batch 32, 75 steps an epoch); the config's 128
# since 2026-12-03 (issue 25) makes it 18 steps an epoch, a weaker stage one (70.8 % vs ~85 % synthetic val).
name=$1; shift
out=${OUT_ROOT:-runs/refit}
mkdir -p "$out"
SMALL=(model.name=resnet18 data.image_size=64 train.epochs=40 schedule.warmup_epochs=3 'train.mixed_precision="no"'
       train.channels_last=false tracking.backends=[] train.progress=false data.num_workers=0 checkpoint.keep_last=0
       checkpoint.every_epochs=1000 eval.confusion_every_epochs=1000 data.resize=stretch
       pretrain.synth_n=3000 pretrain.epochs=8 pretrain.batch_size=32 pretrain.val_fraction=0.2
       pretrain.global_batch_size=32
       data.root=../shared/checkbox_state_v2/train pretrain.output_dir=$out/stage1)
start=$(date +%s)
OMP_NUM_THREADS=1 PYTHONPATH=${CODE:-.} ${PY:-python} -m checkbox_dist cv --config configs/checkbox_state_v2.yaml \
  --folds 3 "$@" "${SMALL[@]}" --out "$out/$name" > "$out/$name.log" 2>&1
echo "$name rc=$? wall=$(( $(date +%s) - start ))s" >> "$out/walls.txt"
