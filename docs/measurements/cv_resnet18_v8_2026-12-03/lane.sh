#!/usr/bin/env bash
# usage: bash docs/measurements/cv_resnet18_v8_2026-12-03/lane.sh SEED -- the ResNet18 proxy (v4 generator, 12,000 x 16-epoch
# stage one on synthetic seed SEED, trained once by the first row into runs/q13/stage_sSEED), then paired fine-tune rows on it:
# the seed's SGD (lr 0.001, momentum 0.85, no weight decay) and SGD at 10x that lr, against the config's AdamW 0.002; then the
# fine-tune's augmentation off, and its geometry twice as strong (stage one keeps the config's: it is pinned and trained);
# last, the AdamW lr doubled (0.004).
seed=$1
row() { name=$1; shift; OUT_ROOT=runs/q13 bash docs/measurements/cv_resnet18_v2_2026-12-01/row.sh ${name}_s$seed \
  pretrain.synth_n=12000 pretrain.epochs=16 pretrain.synth_seed=$seed pretrain.output_dir=runs/q13/stage_s$seed "$@"; }
row base
row sgd_seed optim.name=sgd optim.lr=0.001 optim.momentum=0.85 optim.weight_decay=0
row sgd_lr01 optim.name=sgd optim.lr=0.01 optim.momentum=0.9 optim.weight_decay=0.0005
A=data.augment
row aug_none $A.degrees=0 $A.translate=0 "$A.scale=[1.0,1.0]" $A.brightness=0 $A.contrast=0 $A.saturation=0 $A.hue=0 $A.invert=0
row aug_geom2 $A.degrees=10 $A.translate=0.16 "$A.scale=[0.7,1.3]"
row adamw_lr004 optim.lr=0.004
