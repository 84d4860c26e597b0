#!/usr/bin/env bash
# 5-fold CV of the ResNet50 recipe (configs/checkbox_state_v2.yaml) and variants on one H200: measured 2026-11-30,
# 214 s for two variants (10 folds, ~62 s each, 5 at a time, + the 20k-image synthetic pretraining, ~70 s).
#
#   bash benchmarks/quality_gpu.sh shared_data/checkbox_state_v2/train [DEST]    (DEST default: runs/quality_gpu)
#   RESULTS_DIR=/somewhere bash benchmarks/quality_gpu.sh DATA      (also copy summaries + OOF CSVs there)
#   EPOCHS=100 PARALLEL=6 bash benchmarks/quality_gpu.sh DATA                      (shorter / fewer processes)
#   PYTHON=.venv/bin/python SKIP_INSTALL=1 SYNTH_N=300 EPOCHS=1 PARALLEL=2 \
#     EXTRA="model.name=test_resnet data.image_size=32 train.mixed_precision=\"no\"" bash benchmarks/quality_gpu.sh D
#                                                                               (CPU dry run of the plumbing)
#
# Variants (every one a normal `checkbox-dist cv --folds 5`, selection=final: no epoch is picked on the fold). The
# config is two-stage (its `pretrain` section): a variant's folds share one synthetic pretraining, trained by the
# first fold to get there (the rest wait on its lock); a variant that changes the recipe (EMA, mixup, 224 px)
# changes stage one too and trains its own (~70 s), since stage one inherits the fine-tune's config.
#   recipe              configs/checkbox_state_v2.yaml as it is (86.6 +- 4.8 on 2026-11-30, as synth_ft_letterbox)
#   stretch             fine-tune stretched too (84.9 +- 4.4, as synth_ft)
#   scratch             no pretraining, stretched: the config before 2026-12-01 (76.6 +- 2.5, as recipe)
#   scratch_letterbox   no pretraining, letterboxed
#   unbalanced          no balanced sampling (77.1 +- 3.8 without pretraining)
#   ema, mixup, px224   train.ema_decay=0.998 / train.mixup_alpha=0.2 / data.image_size=224, both stages
#   synth40k, synth_e20 stage one on 40,000 images / for 20 epochs
#   lr5e-4, lr1e-3      fine-tune lr 0.0005 / 0.001 (stage one keeps its pinned 0.002, so it is shared)
#   synth40k_lr5e-4     both: the CPU's best direction (ResNet18 64 px: 4x stage one +5.6, with lr 0.0005 and
#                       longer fine-tuning +7.0, every fold; docs/RESULTS.md)
#   geom2               augmentation geometry twice as strong (10 deg, translate 0.16, scale 0.7-1.3), both stages;
#                       ResNet18 proxy, fine-tune only, 2026-12-03: +0.2 / +1.7 on two stage ones, inside the noise
#   mix2k               2,000 synthetic images (seed 1) kept in every fold's training split (pretrain.mix_n)
#   wide, wide_max      128x320 input, both stages letterboxed (data.image_width; crops are 2.4:1, median), with
#                       avg / max pooling; maxpool: model.global_pool=max at 128 px. On the CPU proxy (ResNet18
#                       64 px stretch, docs/RESULTS.md) all three lost to the square avg-pooled input (-5.8, -2.7,
#                       -1.7), max pooling won back +3.2 of the wide input's loss; ResNet50 letterboxes at 128 px
#   kinds, kinds_e20    stage one learns the 23 kinds the generator drew (pretrain.labels=kind), not the 3 classes
# Since 2026-12-01 the generator is version 4 (checkbox_dist/synth/generator.py): `recipe` then measures it against the
# version-1 figures quoted above (same folds, same config otherwise); on the CPU proxy v3 and v4 win only with a
# long enough stage one (docs/RESULTS.md), so `synth_e20` is the row to run beside it.
#
# Why it fits in minutes: an epoch is 330 images (~0.04 s of ResNet50 128 px bf16 work on an H200), so a fold
# is bound by Python/kernel-launch overhead, not by the GPU. 20 fold jobs therefore run as PARALLEL (default
# 8) concurrent processes on the one GPU, each `cv --fold I` (in-process training, data held on the GPU).
# Per-epoch costs are switched off with config keys: eval, plots and the checkpoint happen once, at the end
# (selection=final sets eval.every_epochs=epochs; checkpoint.every_epochs=100000, checkpoint.keep_last=0),
# the loop syncs with the host every 50 steps (train.log_every_steps=50), no tqdm, no trackers (wandb is not
# installed there). A final `cv` call per variant finds every fold done and writes the summary.
#
# The machine's python3 has torch, timm, accelerate, matplotlib, pyyaml, tqdm, pillow, numpy, safetensors;
# our package is installed with --no-deps (no network there); wandb/tensorboard are only needed for tracking.
set -uo pipefail
DATA=${1:?usage: bash benchmarks/quality_gpu.sh DATA_DIR [DEST]}
DEST=${2:-runs/quality_gpu}
EPOCHS=${EPOCHS:-}
PARALLEL=${PARALLEL:-8}
FOLDS=5
PY=${PYTHON:-python3}
SYNTH_N=${SYNTH_N:-}  # "" = the config's pretrain.synth_n (20,000)
EXTRA=${EXTRA:-}
cd "$(dirname "$0")/.."
[ -d "$DATA/checked" ] || { echo "error: $DATA has no checked/ folder (expected DATA/<class>/*.png)"; exit 2; }
start=$(date +%s)

# ---- install (no network: --no-deps and no build isolation; fall back to PYTHONPATH) -------------------
[ -n "${SKIP_INSTALL:-}" ] || $PY -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip_install.log 2>&1 \
  || { echo "pip install -e . failed (see /tmp/pip_install.log); using PYTHONPATH"; export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}; }
$PY - <<'EOF' || exit 2
import importlib.util
need = ["torch", "torchvision", "timm", "accelerate", "yaml", "PIL", "numpy", "matplotlib", "tqdm", "safetensors"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
optional = [m for m in ["wandb", "tensorboard"] if importlib.util.find_spec(m) is None]
import torch, timm, accelerate
print(f"torch {torch.__version__} | timm {timm.__version__} | accelerate {accelerate.__version__} | "
      f"cuda {torch.cuda.is_available()} {torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}"
      f" | optional missing (tracking off): {optional or 'none'}")
if missing:
    raise SystemExit(f"error: missing required packages: {missing}: carry them as wheels (see .whl in the device notes)")
EOF
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false
mkdir -p "$DEST/logs"
CACHE=$DEST/cache
# Every run: no trackers, host sync every 50 steps, one eval/checkpoint at the end, data on the GPU.
BASE=(tracking.backends=[] train.progress=false train.log_every_steps=50 checkpoint.every_epochs=100000
      checkpoint.keep_last=0 eval.confusion_every_epochs=100000 data.num_workers=0 "data.cache_dir=$CACHE")
read -ra extra <<<"$EXTRA"
BASE+=("${extra[@]}")
COMMON=("${BASE[@]}")
[ -n "$EPOCHS" ] && COMMON+=("train.epochs=$EPOCHS")
CFG=configs/checkbox_state_v2.yaml
read -ra ORDER <<<"${VARIANTS:-recipe scratch_letterbox ema mixup}"
export PY CFG FOLDS DEST DATA COMMON_STR="${COMMON[*]}"
# Overrides per variant, as one line each (word-split when used).
variant_overrides() {
  case $1 in
    recipe) echo "" ;;
    stretch) echo "data.resize=stretch" ;;
    scratch) echo "pretrain.synth_n=0 data.resize=stretch" ;;
    scratch_letterbox) echo "pretrain.synth_n=0" ;;
    unbalanced) echo "data.balanced_sampling=false" ;;
    ema) echo "train.ema_decay=0.998" ;;
    mixup) echo "train.mixup_alpha=0.2" ;;
    px224) echo "data.image_size=224" ;;
    synth40k) echo "pretrain.synth_n=40000" ;;
    synth_e20) echo "pretrain.epochs=20" ;;
    nols) echo "train.label_smoothing=0.0" ;;
    lr5e-4) echo "optim.lr=0.0005" ;;
    lr1e-3) echo "optim.lr=0.001" ;;
    synth40k_lr5e-4) echo "pretrain.synth_n=40000 optim.lr=0.0005" ;;
    mix2k) echo "pretrain.mix_n=2000" ;;
    wide) echo "data.image_width=320 pretrain.resize=letterbox" ;;
    wide_max) echo "data.image_width=320 pretrain.resize=letterbox model.global_pool=max" ;;
    maxpool) echo "model.global_pool=max" ;;
    geom2) echo "data.augment.degrees=10 data.augment.translate=0.16 data.augment.scale=[0.7,1.3]" ;;
    kinds) echo "pretrain.labels=kind" ;;
    kinds_e20) echo "pretrain.labels=kind pretrain.epochs=20" ;;
    *) echo "unknown variant $1" >&2; return 1 ;;
  esac
}
export -f variant_overrides
for v in "${ORDER[@]}"; do variant_overrides "$v" >/dev/null || exit 2; done
[ -n "$SYNTH_N" ] && COMMON+=("pretrain.synth_n=$SYNTH_N")  # before the variant's own overrides: synth40k wins
export COMMON_STR="${COMMON[*]}"

run_jobs() {  # lines "variant fold" on stdin -> that many concurrent `cv --fold` processes
  xargs -P "$1" -L 1 bash -c '
    read -ra COMMON <<<"$COMMON_STR"
    v=$0; i=$1; log=$DEST/logs/${v}_fold$i.log
    $PY -m checkbox_dist cv --config $CFG --folds $FOLDS --fold "$i" --out "$DEST/$v" "data.root=$DATA" \
        "${COMMON[@]}" $(variant_overrides "$v") >"$log" 2>&1 \
      && echo "$(date +%T) $v fold $i done ($(grep -o "trained in [0-9]*s" "$log"))" \
      || echo "$(date +%T) $v fold $i FAILED: $(tail -1 "$log")"'
}
# One stage first (no lock to wait on), then the two-stage variants, whose first fold trains stage one.
for v in "${ORDER[@]}"; do
  [[ $(variant_overrides "$v") == *pretrain.synth_n=0* ]] && for i in $(seq 0 $((FOLDS - 1))); do echo "$v $i"; done
done | run_jobs "$PARALLEL"
for v in "${ORDER[@]}"; do
  [[ $(variant_overrides "$v") == *pretrain.synth_n=0* ]] || for i in $(seq 0 $((FOLDS - 1))); do echo "$v $i"; done
done | run_jobs "$PARALLEL"
grep -h "^pretrain: stage one\|^done: best epoch" "$DEST"/logs/*_fold*.log 2>/dev/null | grep -A1 "^pretrain" | head -20

# ---- summaries (every fold done: no training, only the merge) and one table ------------------------
for v in "${ORDER[@]}"; do
  $PY -m checkbox_dist cv --config $CFG --folds $FOLDS --out "$DEST/$v" "data.root=$DATA" "${COMMON[@]}" \
      $(variant_overrides "$v") >"$DEST/logs/${v}_summary.log" 2>&1 || echo "$v: summary failed: $(tail -1 "$DEST/logs/${v}_summary.log")"
done
$PY - "$DEST" "${ORDER[@]}" <<'EOF'
import json, sys
from pathlib import Path
out, names = Path(sys.argv[1]), sys.argv[2:]
rows = {}
print(f"\n{'variant':<10} {'CV top-1 (5 folds)':>20} {'macro-F1':>17} {'pooled':>7}  per-class F1 (mean)   epochs px model")
for name in names:
    f = out / name / "cv_summary.json"
    if not f.is_file():
        print(f"{name:<10} not done (see {out}/logs/{name}_*.log)")
        continue
    s = json.loads(f.read_text())
    rows[name] = {k: s[k] for k in ("top1", "macro_f1", "per_class_f1", "pooled_oof", "per_fold", "epochs",
                                    "image_size", "model", "folds", "n_images")}
    pc = " ".join(f"{c[:5]} {v['mean']:.3f}" for c, v in s["per_class_f1"].items())
    print(f"{name:<10} {s['top1']['mean']:.4f} ± {s['top1']['std']:.4f}    {s['macro_f1']['mean']:.4f} ± "
          f"{s['macro_f1']['std']:.4f} {s['pooled_oof']['top1']:.4f}  {pc}  {s['epochs']} {s['image_size']} {s['model']}")
(out / "quality_gpu_summary.json").write_text(json.dumps(rows, indent=1))
EOF
if [ -n "${RESULTS_DIR:-}" ]; then  # a compact bundle to bring back: the summaries and each variant's OOF CSV
  mkdir -p "$RESULTS_DIR" && cp "$DEST/quality_gpu_summary.json" "$RESULTS_DIR/"
  for v in "${ORDER[@]}"; do [ -f "$DEST/$v/oof_predictions.csv" ] && cp "$DEST/$v/oof_predictions.csv" "$RESULTS_DIR/oof_$v.csv"; done
fi
echo "total wall time: $(( $(date +%s) - start )) s | results: $DEST/<variant>/cv_summary.json, logs: $DEST/logs"
