#!/usr/bin/env bash
# Installed size of the two environments README's "Installing" describes, each a fresh venv, measured with `du`:
#   default   pip install -c constraints.txt .      (PyPI's torch with its CUDA libraries: nvidia-*, triton)
#   CPU-only  PyTorch's CPU build of torch first, then the same install
# Run from the repository root (needs ~7 GB free; both venvs are removed at the end):
#   bash benchmarks/env_size.sh                              # CPU torch from PyTorch's CPU index
#   bash benchmarks/env_size.sh /path/torch-X+cpu-...whl      # or a CPU wheel at hand (its version may differ:
#                                                            # torch and torchvision then follow that wheel)
#   ONLY=cpu bash benchmarks/env_size.sh ...                 # one of the two
set -euo pipefail
CPU_TORCH=${1:-}
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
size() { du -sm "$1" | cut -f1; }

if [ "${ONLY:-}" != cpu ]; then
    $PY -m venv "$WORK/default"
    "$WORK/default/bin/pip" install -q -c constraints.txt .
    echo "default: $(size "$WORK/default") MB, torch $("$WORK/default/bin/python" -c 'import torch; print(torch.__version__)')"
fi
[ "${ONLY:-}" != default ] || exit 0

$PY -m venv "$WORK/cpu"
if [ -z "$CPU_TORCH" ]; then
    "$WORK/cpu/bin/pip" install -q "$(grep '^torch==' constraints.txt)" --index-url https://download.pytorch.org/whl/cpu
    cp constraints.txt "$WORK/constraints.txt"
else
    "$WORK/cpu/bin/pip" install -q "$CPU_TORCH"
    # keep the CPU wheel's own version, and a torchvision made for it
    grep -vE '^torch(vision)?==' constraints.txt > "$WORK/constraints.txt"
    "$WORK/cpu/bin/python" -c 'import torch; print(f"torch=={torch.__version__}")' 2>/dev/null >> "$WORK/constraints.txt"
fi
"$WORK/cpu/bin/pip" install -q -c "$WORK/constraints.txt" .
echo "CPU-only: $(size "$WORK/cpu") MB, torch $("$WORK/cpu/bin/python" -c 'import torch; print(torch.__version__)')"
cuda=$("$WORK/cpu/bin/pip" list 2>/dev/null | grep -ciE '^(nvidia|triton|cuda)' || true)
echo "CPU-only: CUDA packages installed: $cuda"
