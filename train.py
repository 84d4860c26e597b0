"""Thin entry point so launchers can run a file:

    accelerate launch --config_file launch/multi_gpu.yaml train.py --config configs/checkbox_state_v2.yaml
    python train.py --config configs/quickstart.yaml train.epochs=1

Everything after `train.py` is what `checkbox-dist train` takes. The loop is checkbox_dist/train.py.
"""

import sys

from checkbox_dist.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
