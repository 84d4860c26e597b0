#!/usr/bin/env bash
# One prepared GPU measurement (issue 5): bench-train for the reference configurations, in a few minutes.
#   bash benchmarks/gpu.sh [LOG_DIR]      # on a machine with torch + timm + accelerate and one GPU
#   ONLY="r50_128_bf16_cl r50_64_bf16_cl" REPEATS=2 bash benchmarks/gpu.sh    # a subset
# Installs nothing but this package (--no-deps: the machine's torch/timm/accelerate are used as they are).
# Data: 4,000 synthetic crops (3,200 train) so a 256 batch gives 12 steps per epoch; decoded once, on the GPU.
# docs/PERFORMANCE.md quotes this script's output.
set -uo pipefail
LOG_DIR=${1:-/tmp/gpu_bench}
mkdir -p "$LOG_DIR"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || { echo "pip install failed"; exit 1; }
date -u +"%Y-%m-%d %H:%M UTC"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm, accelerate; print('torch', torch.__version__, 'timm', timm.__version__, 'accelerate', accelerate.__version__)"
echo "=== cuda_branches (fused optimizers, cuDNN/TF32, CUDA RNG through a resume)"
timeout 300 python3 benchmarks/cuda_branches.py "$LOG_DIR/cuda_branches"; echo "exit $?"
CACHE=/tmp/cbd_cache
DATA=$CACHE/synth-n4000-s0
python3 -m checkbox_dist synth --out "$DATA" --n 4000 --seed 0 --workers 16
COMMON=(--config configs/checkbox_state_v2.yaml "data.root=$DATA" "data.cache_dir=$CACHE" model.name=resnet50
        model.drop_path_rate=0.0 data.num_workers=0 "tracking.backends=[]" train.log_every_steps=4 data.batch_size=256
        train.global_batch_size=256)
REPEATS=${REPEATS:-3}
ONLY=${ONLY:-"r50_224_bf16_cl r50_224_bf16_cl_noaug r50_224_fp32 r50_224_fp32_cl r50_128_bf16_cl r50_64_bf16_cl r50_224_bf16_cl_compile"}
bench() {  # name, then bench-train arguments; runs only the names listed in $ONLY
  local name=$1; shift
  [[ " $ONLY " == *" $name "* ]] || return 0
  echo "=== $name"
  timeout 400 python3 -m checkbox_dist bench-train "${COMMON[@]}" "$@" > "$LOG_DIR/$name.log" 2>&1
  echo "exit $?"
  grep -E "^bench-train|^ +repeat|^plain step|^ours|^peak|^largest|^error" "$LOG_DIR/$name.log"
}
bench r50_224_bf16_cl data.image_size=224 train.mixed_precision=bf16 train.channels_last=true --repeats "$REPEATS" --epochs 4 ${FIND_BATCH---find-batch-size}
# The same with augmentation off: what the augmentation itself costs (ours/plain with vs without).
bench r50_224_bf16_cl_noaug data.image_size=224 train.mixed_precision=bf16 train.channels_last=true \
  data.augment.degrees=0 data.augment.translate=0 "data.augment.scale=[1.0,1.0]" data.augment.brightness=0 \
  data.augment.contrast=0 data.augment.saturation=0 data.augment.hue=0 data.augment.invert=0 --repeats "$REPEATS" --epochs 4
bench r50_224_fp32 data.image_size=224 train.mixed_precision=no train.channels_last=false --repeats 2 --epochs 3
# fp32 plain made 2,206 img/s NCHW on 2026-11-28 against the 3,122 (TF32 on in both): the same in channels_last
# tells whether the memory format is the gap (tensor-core convolutions prefer NHWC; NCHW input may cost layout transposes).
bench r50_224_fp32_cl data.image_size=224 train.mixed_precision=no train.channels_last=true --repeats 2 --epochs 3
bench r50_128_bf16_cl data.image_size=128 train.mixed_precision=bf16 train.channels_last=true --repeats "$REPEATS" --epochs 4
bench r50_64_bf16_cl data.image_size=64 train.mixed_precision=bf16 train.channels_last=true --repeats "$REPEATS" --epochs 4
bench r50_224_bf16_cl_compile data.image_size=224 train.mixed_precision=bf16 train.channels_last=true train.compile=true --repeats 1 --epochs 3 --steps 10
# Not in the default set (compiling costs ~1 min): 64 px is launch-bound, where fusing the augmentation's kernels
# (compiled with the model since 2026-12-02) should show most.
bench r50_64_bf16_cl_compile data.image_size=64 train.mixed_precision=bf16 train.channels_last=true train.compile=true --repeats 1 --epochs 3 --steps 10
