"""The package imports and predicts where POSIX-only modules are missing (Windows has no `fcntl` or
`resource`), and inference picks the accelerator a machine has: CUDA, else Apple's MPS, else the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from checkbox_dist.infer.predictor import inference_device
from conftest import REPO

WITHOUT_POSIX = """
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name in ("fcntl", "resource"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
for name in ("fcntl", "resource"):
    sys.modules.pop(name, None)
sys.meta_path.insert(0, Missing())
from checkbox_dist.cli import main
import checkbox_dist.core.files, checkbox_dist.model.checkpoint, checkbox_dist.train.loop, checkbox_dist.serve.app
assert "fcntl" not in sys.modules and "resource" not in sys.modules
sys.exit(main(sys.argv[1:]))
"""


def test_imports_and_predicts_without_fcntl_and_resource(infer_checkpoint, synth_root, tmp_path):
    image = next((synth_root / "checked").glob("*.png"))
    out = tmp_path / "predictions.json"
    proc = subprocess.run([sys.executable, "-c", WITHOUT_POSIX, "predict", "--checkpoint", str(infer_checkpoint),
                           "--format", "json", "--output", str(out), str(image)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert len(rows) == 1 and rows[0]["class"] in ("checked", "other", "unchecked")


@pytest.mark.parametrize("cuda, mps, want", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_inference_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, want):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert inference_device(None).type == want
    assert inference_device("cpu").type == "cpu"  # an explicit choice wins
