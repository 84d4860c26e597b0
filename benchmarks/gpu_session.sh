#!/usr/bin/env bash
# Everything one H200 lease (15 device minutes, <= 10 per command) measures, time-boxed, in one command:
#   1. issue 5, eager: ResNet50 224 bf16 channels_last with and without augmentation, 64 px   (benchmarks/gpu.sh)
#   2. issue 6: 5-fold CV of the two-stage ResNet50 recipe and of a lower fine-tune lr     (benchmarks/quality_gpu.sh)
#   3. issue 5, compiled: ResNet50 224 bf16 + torch.compile                                    (benchmarks/gpu.sh)
# Usage (device tool): copy ../shared/checkbox_state_v2/train to shared_data/checkbox_state_v2/train (gitignored),
#   run with carry ["shared_data"]:   bash benchmarks/gpu_session.sh "$OUT"
# Each block has its own time limit (PERF_S, QUALITY_S, COMPILE_S) so a slow block cannot eat the others; what
# comes back is OUT/session.log (all of stdout), OUT/perf.tgz (bench logs) and OUT/quality.tgz (CV summaries,
# out-of-fold predictions and logs). Locally: bash benchmarks/gpu_session.sh /tmp/session (needs a GPU).
set -uo pipefail
OUT_DIR=${1:?usage: bash benchmarks/gpu_session.sh OUT_DIR}
DATA=${DATA:-shared_data/checkbox_state_v2/train}
cd "$(dirname "$0")/.."
mkdir -p "$OUT_DIR"
exec > >(tee -a "$OUT_DIR/session.log") 2>&1
t0=$(date +%s)
elapsed() { echo "[$(( $(date +%s) - t0 )) s]"; }
export PYTHONUNBUFFERED=1

echo "== 1. training throughput, eager $(elapsed)"
ONLY="r50_224_bf16_cl r50_224_bf16_cl_noaug r50_64_bf16_cl" REPEATS=${REPEATS:-2} FIND_BATCH= \
  timeout "${PERF_S:-170}" bash benchmarks/gpu.sh /tmp/gpu_bench || echo "perf block ended with $?"
tar czf "$OUT_DIR/perf.tgz" -C /tmp gpu_bench 2>/dev/null

echo "== 2. 5-fold CV on $DATA $(elapsed)"
if [ -d "$DATA" ]; then
  VARIANTS=${VARIANTS:-"recipe lr5e-4"} timeout "${QUALITY_S:-270}" \
    bash benchmarks/quality_gpu.sh "$DATA" /tmp/quality_gpu || echo "quality block ended with $?"
  pkill -TERM -f "checkbox_dist (cv|train)" && sleep 5  # timeout stops the script, not the jobs it started
  tar czf "$OUT_DIR/quality.tgz" -C /tmp --exclude=cache --exclude=synth --exclude='*.pt' --exclude='*.safetensors' \
    quality_gpu 2>/dev/null
else
  echo "skipped: $DATA not found (copy ../shared/checkbox_state_v2/train there and carry shared_data)"
fi

echo "== 3. training throughput, compiled $(elapsed)"
ONLY="r50_224_bf16_cl_compile" timeout "${COMPILE_S:-150}" bash benchmarks/gpu.sh /tmp/gpu_bench \
  || echo "compile block ended with $?"
tar czf "$OUT_DIR/perf.tgz" -C /tmp gpu_bench 2>/dev/null
echo "== done $(elapsed)"
