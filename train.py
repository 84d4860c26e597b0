"""Thin entry point so launchers can run a file:

    accelerate launch --config_file launch/multi_gpu.yaml train.py --config configs/checkbox_state_v2.yaml
    ACCELERATE_USE_CPU=true accelerate launch --config_file launch/cpu_2proc.yaml train.py --config C
    PJRT_DEVICE=TPU accelerate launch --config_file launch/tpu_vm.yaml train.py --config C
    python train.py --config configs/quickstart.yaml train.epochs=1

Everything after `train.py` is what `checkbox-dist train` takes. The loop is checkbox_dist/train.py.
`main` is a function because Accelerate's TPU launcher imports this file and calls
`main_training_function` (launch/tpu_vm.yaml) instead of running it as a script.
"""

import sys

from checkbox_dist.cli import main as cli_main


def main() -> None:
    code = cli_main(["train", *sys.argv[1:]])
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
