#!/usr/bin/env bash
# The inference figures in docs/INFERENCE.md, in one go (~3 min on 2 cores once the checkpoint exists):
#   bash benchmarks/inference_cpu.sh [CHECKPOINT]
# No CHECKPOINT: trains the quickstart (configs/quickstart.yaml: resnet18, 64 px, 900 synthetic crops) first.
# Then: export --int8 (static and dynamic), bench-infer, and bench-serve with micro-batching on / off and on ONNX Runtime.
# The model runs on SERVER_CPUS (default 0,1: "2 CPU cores"); on a machine with >= 4 cores the load-test
# client runs on CLIENT_CPUS (default 2,3) so that it does not steal the server's cores.
# CD overrides the command (e.g. CD="python3 -m checkbox_dist" without an installed entry point).
set -uo pipefail
CD=${CD:-checkbox-dist}
N=${N:-512}            # bench-infer images
SECS=${SECS:-5}        # bench-serve seconds per configuration
SERVER_CPUS=${SERVER_CPUS:-0,1}
if [ "$(nproc)" -ge 4 ]; then CLIENT_CPUS=${CLIENT_CPUS:-2,3}; else CLIENT_CPUS=${CLIENT_CPUS:-$SERVER_CPUS}; fi
export PYTHONUNBUFFERED=1
$CD --version >/dev/null || { echo "cannot run $CD (set CD=...)"; exit 1; }
date -u +"%Y-%m-%d %H:%M UTC"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nproc) cores here; model on cores" \
     "$SERVER_CPUS, load-test client on cores $CLIENT_CPUS"
CKPT=${1:-}
if [ -z "$CKPT" ]; then
    CKPT=runs/bench-quickstart
    [ -d "$CKPT/checkpoints/best" ] || $CD train --config configs/quickstart.yaml "train.output_dir=$CKPT" \
        train.progress=false | tail -3
fi
on_server() { taskset -c "$SERVER_CPUS" "$@"; }
on_client() { taskset -c "$CLIENT_CPUS" "$@"; }

if [ -d "$CKPT/checkpoints/best" ]; then BEST=$CKPT/checkpoints/best; else BEST=$CKPT; fi

echo "== checkbox-dist export --checkpoint $CKPT --format onnx --int8"
on_server $CD export --checkpoint "$CKPT" --format onnx --int8
echo "== checkbox-dist export --checkpoint $CKPT --format onnx --int8 --int8-mode dynamic --out $BEST/dynamic/model.onnx"
on_server $CD export --checkpoint "$CKPT" --format onnx --int8 --int8-mode dynamic --out "$BEST/dynamic/model.onnx"
echo "== checkbox-dist bench-infer --checkpoint $CKPT --threads 2 --n $N --extra-onnx $BEST/dynamic/model.int8.onnx"
on_server $CD bench-infer --checkpoint "$CKPT" --threads 2 --n "$N" --extra-onnx "$BEST/dynamic/model.int8.onnx"
serve_bench() {  # label, model (checkpoint or .onnx), then extra serve options
    local label=$1 model=$2; shift 2
    local port=$((8100 + RANDOM % 800))
    echo "== [$label] checkbox-dist serve --checkpoint $model --threads 2 $*; bench-serve --seconds $SECS --concurrency 16"
    # taskset execs the server, so $! is the server itself and `kill` reaches it
    taskset -c "$SERVER_CPUS" $CD serve --checkpoint "$model" --port $port --threads 2 --device cpu \
        --log-level warning "$@" &
    local pid=$!
    on_client $CD bench-serve --url "http://127.0.0.1:$port" --seconds "$SECS" --concurrency 16
    kill $pid; wait $pid 2>/dev/null
}
serve_bench "micro-batched, eager torch" "$BEST"
serve_bench "no batching (--max-batch 1), eager torch" "$BEST" --max-batch 1
serve_bench "micro-batched, ONNX Runtime" "$BEST/model.onnx"
serve_bench "micro-batched, ONNX int8" "$BEST/model.int8.onnx"
serve_bench "no batching (--max-batch 1), ONNX int8" "$BEST/model.int8.onnx" --max-batch 1
