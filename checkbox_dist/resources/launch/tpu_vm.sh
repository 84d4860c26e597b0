#!/usr/bin/env bash
# Train on a Cloud TPU VM (one host or a pod slice) from your workstation, with gcloud:
#
#   TPU_NAME=ckbx ZONE=us-central2-b ACCELERATOR=v4-8 bash launch/tpu_vm.sh \
#       --config configs/checkbox_state_v2.yaml data.root=/home/$USER/data/checkbox_state_v2/train
#
# Steps (each skipped when already done, so re-running continues): 1. create the TPU VM, or reuse the
# one named TPU_NAME; 2. install the pinned torch/torch_xla pair and the CI-pinned rest on every
# worker (the same set as tests/xla_venv.sh and docker/Dockerfile.tpu); 3. copy this checkout to every
# worker (git archive of HEAD: commit first); 4. run `accelerate launch --config_file
# launch/tpu_vm.yaml train.py ARGS` on all workers at once (PJRT_DEVICE=TPU; one process per chip).
# The data must be on every worker (copy it with `gcloud compute tpus tpu-vm scp --worker=all`, or
# point data.root at a mounted bucket). Runs land in ~/checkbox_dist/runs on worker 0.
# Knobs: TPU_NAME, ZONE, ACCELERATOR (v4-8, v5litepod-8, v5p-8, v6e-8, ...), RUNTIME (the TPU software
# version; default: the one Google names for the accelerator's generation), PROJECT (default: gcloud's),
# SPOT=1 for a preemptible VM, WANDB_API_KEY (when set: copied to ~/.checkbox_dist_wandb_key, mode 600, on
# every worker and read there; never on a command line). The torch/torch_xla pins are stamped in the
# workers' venv (~/venv-xla/.checkbox_dist-pins): a run with other pins reinstalls them.
# A preempted spot VM loses its processes: run again and `train.resume=auto` with a fixed
# train.output_dir continues from the last checkpoint (put it on a bucket or a persistent disk).
set -euo pipefail
TPU_NAME=${TPU_NAME:-checkbox-dist}
ZONE=${ZONE:?set ZONE, e.g. us-central2-b}
ACCELERATOR=${ACCELERATOR:-v4-8}
# The TPU software (runtime) version per TPU generation for PyTorch, from Google's "TPU software versions"
# page (https://cloud.google.com/tpu/docs/runtimes): v4 and older, v5e (v5litepod), v5p and v6e (Trillium)
# each need their own.
if [ -z "${RUNTIME:-}" ]; then
    case "$ACCELERATOR" in
        v2-*|v3-*|v4-*) RUNTIME=tpu-ubuntu2204-base ;;
        v5litepod-*|v5e-*) RUNTIME=v2-alpha-tpuv5-lite ;;
        v5p-*) RUNTIME=v2-alpha-tpuv5 ;;
        v6e-*) RUNTIME=v2-alpha-tpuv6e ;;
        *) echo "error: no TPU software version known for ACCELERATOR=$ACCELERATOR: set RUNTIME" \
                "(https://cloud.google.com/tpu/docs/runtimes)" >&2
           exit 2 ;;
    esac
fi
PINS="torch==2.9.1 torchvision==0.24.1 torch_xla[tpu]==2.9.0"
PINS_STAMP=$(printf '%s' "$PINS" | git hash-object --stdin | cut -c1-16)  # git: on every workstation
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"  # the checkout root, via launch/ or its target
work=$(mktemp -d)  # mode 700: what is copied to the workers, the W&B key included
trap 'rm -rf "$work"' EXIT
gc=(gcloud compute tpus tpu-vm --zone "$ZONE" ${PROJECT:+--project "$PROJECT"})
on_all() { "${gc[@]}" ssh "$TPU_NAME" --worker=all --command "$1"; }

if ! "${gc[@]}" describe "$TPU_NAME" >/dev/null 2>&1; then
    echo "creating TPU VM $TPU_NAME ($ACCELERATOR, $RUNTIME) in $ZONE"
    "${gc[@]}" create "$TPU_NAME" --accelerator-type "$ACCELERATOR" --version "$RUNTIME" ${SPOT:+--spot}
else
    echo "reusing TPU VM $TPU_NAME"
fi

grep -v -i -E '^(torch|torchvision|triton|nvidia-|cuda-)' constraints.txt | grep -v '^#' > "$work/constraints-xla.txt"
"${gc[@]}" scp "$work/constraints-xla.txt" "$TPU_NAME":constraints-xla.txt --worker=all
# The torch/torch_xla pair is (re)installed when the stamp in the venv differs from these pins.
on_all "set -e; python3 -m venv ~/venv-xla; . ~/venv-xla/bin/activate; pip -q install --upgrade pip;
    if [ \"\$(cat ~/venv-xla/.checkbox_dist-pins 2>/dev/null)\" != $PINS_STAMP ]; then
        pip -q install$(printf ' %q' $PINS) && echo $PINS_STAMP > ~/venv-xla/.checkbox_dist-pins; fi;
    pip -q install -c ~/constraints-xla.txt accelerate timm pyyaml pillow numpy matplotlib tqdm safetensors wandb tensorboard"

git archive --format=tar.gz -o "$work/checkbox_dist.tar.gz" HEAD
"${gc[@]}" scp "$work/checkbox_dist.tar.gz" "$TPU_NAME":checkbox_dist.tar.gz --worker=all
on_all "set -e; mkdir -p ~/checkbox_dist && tar -xzf ~/checkbox_dist.tar.gz -C ~/checkbox_dist;
    . ~/venv-xla/bin/activate && pip -q install --no-deps -e ~/checkbox_dist"

# The W&B key travels in a file (mode 600; scp keeps the mode) and is read on the worker, so it is on no
# command line, here or there (printf is a shell builtin).
wandb_env=""
if [ -n "${WANDB_API_KEY:-}" ]; then
    (umask 077 && printf '%s' "$WANDB_API_KEY" >"$work/wandb_key")
    "${gc[@]}" scp "$work/wandb_key" "$TPU_NAME":.checkbox_dist_wandb_key --worker=all
    wandb_env='chmod 600 ~/.checkbox_dist_wandb_key && export WANDB_API_KEY="$(cat ~/.checkbox_dist_wandb_key)" &&'
fi
args=$(printf ' %q' "$@")
on_all "cd ~/checkbox_dist && . ~/venv-xla/bin/activate && export PJRT_DEVICE=TPU && $wandb_env
    accelerate launch --config_file launch/tpu_vm.yaml train.py$args"
