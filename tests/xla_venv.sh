#!/usr/bin/env bash
# Build the second environment for the torch_xla tests (tests/train/test_xla.py) and TPU-style runs on CPU:
#
#     bash tests/xla_venv.sh [VENV]            # default .venv-xla (gitignored by `.venv-*/`)
#
# torch_xla 2.9.0 needs torch 2.9.x, while the main environment pins torch 2.14.1, so it cannot live in
# .venv. The pins below are the torch/torch_xla pair that launch/tpu_vm.sh installs on a TPU VM; every
# other package comes from constraints.txt, so both environments run the same accelerate/timm code.
# Installs with uv (pinned below, installed into the venv by pip): measured here, a cold install took
# 3.5 min with uv against 7-10 min with pip (about 3 GB: torch 2.9.1 from PyPI brings its CUDA 12
# libraries, ~7 GB on disk), and with uv's cache (~/.cache/uv) warm a fresh venv takes ~15 s. The
# folder is only used once `VENV/.complete` holds the pins: a half-built one (killed mid-install) is
# removed and rebuilt. A lock keeps two parallel test runs from building it at once.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-xla}
PINS="torch==2.9.1 torchvision==0.24.1 torch_xla==2.9.0"
mkdir -p "$(dirname "$VENV")"
exec 9>"${TMPDIR:-/tmp}/checkbox_dist-xla-venv.lock"
flock 9
if [ -f "$VENV/.complete" ] && [ "$(cat "$VENV/.complete")" = "$PINS $(sha256sum constraints.txt | cut -c1-16)" ]; then
    exit 0
fi
rm -rf "$VENV"
# The interpreter of the main environment (3.11 here); torch_xla 2.9.0 ships wheels for 3.10-3.13.
PY=${XLA_VENV_PYTHON:-$( [ -x .venv/bin/python ] && .venv/bin/python -c 'import sys; print(sys._base_executable)' || command -v python3)}
"$PY" -m venv --without-pip "$VENV"  # no ensurepip (~18 s): uv installs everything
# Everything from constraints.txt except the torch family and its CUDA wheels, which the pins replace.
grep -v -i -E '^(torch|torchvision|triton|nvidia-|cuda-)' constraints.txt | grep -v '^#' > "$VENV/constraints-xla.txt"
"$PY" -m pip install -q --no-input --disable-pip-version-check --root-user-action=ignore --target "$VENV/uv" uv==0.13.9
UV=("$VENV/uv/bin/uv" pip install -q --python "$VENV/bin/python")
"${UV[@]}" $PINS
"${UV[@]}" -c "$VENV/constraints-xla.txt" accelerate timm pyyaml pillow numpy matplotlib tqdm safetensors
# The package itself by path, not by pip: an editable build needs a newer setuptools than the venv has.
"$VENV/bin/python" -c 'import site, sys; open(site.getsitepackages()[0] + "/checkbox_dist_repo.pth", "w").write(sys.argv[1] + "\n")' "$PWD"
"$VENV/bin/python" -c 'import torch, torch_xla, accelerate, timm, checkbox_dist' 
echo "$PINS $(sha256sum constraints.txt | cut -c1-16)" > "$VENV/.complete"
