"""Models from the Hugging Face Hub and from timm folders, offline.

`hf-hub:ORG/NAME` is resolved by huggingface_hub's own code from a cache these tests populate themselves, in the
layout a download leaves (HF_HUB_CACHE/models--ORG--NAME/refs/main + snapshots/<sha>/config.json,
model.safetensors), with HF_HUB_OFFLINE=1: nothing reaches the network. The repository holds what
`export --format timm` writes (what `hf upload ORG/NAME DIR` would publish).

- model.pretrained: a timm folder (`local-dir:PATH` or the folder itself) or a Hub id; the built model holds the
  source's weights (a new head when the class count differs), the packaged fine-tuning config trains from it;
- predict, eval, export and serve take the Hub id wherever they take a checkpoint, with the same answers as the
  local folder, and write nothing into the Hub cache.

In-process tests point huggingface_hub's constants (read from the environment at import) at the test cache;
the `train` and `serve` tests start fresh processes with the real environment variables.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, TINY, run_cli, run_main

REPO_ID = "checkbox-test/widgets"
TIMM_FILES = ("config.json", "model.safetensors", "README.md")


def populate_hub_cache(cache: Path, repo_id: str, folder: Path, files=TIMM_FILES) -> Path:
    """Write `folder`'s files into a Hugging Face cache as a download of `repo_id` at main leaves them."""
    sha = hashlib.sha1(repo_id.encode()).hexdigest()
    base = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = base / "snapshots" / sha
    snapshot.mkdir(parents=True)
    for name in files:
        if (folder / name).is_file():
            shutil.copy(folder / name, snapshot / name)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(sha)
    return snapshot


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def exported(infer_checkpoint, tmp_path_factory) -> Path:
    """The session checkpoint as `export --format timm` writes it: what a user publishes on the Hub."""
    out = tmp_path_factory.mktemp("hub-src") / "widgets"
    code, _, stderr = run_main("export", "--checkpoint", str(infer_checkpoint), "--format", "timm", "--out", str(out))
    assert code == 0, stderr
    return out


@pytest.fixture
def hub(exported, tmp_path, monkeypatch):
    """An offline Hub cache holding REPO_ID, for this process and its children."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf-cache"
    populate_hub_cache(cache, REPO_ID, exported)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return SimpleNamespace(cache=cache, id=f"hf-hub:{REPO_ID}", folder=exported, before=_tree(cache))


# ---- model.pretrained -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["local-dir", "folder", "hf-hub"])
def test_model_pretrained_loads_a_timm_folder_or_a_hub_id(hub, spelling):
    from checkbox_dist.core.config import ModelConfig
    from checkbox_dist.model.build import build_model

    source = {"local-dir": f"local-dir:{hub.folder}", "folder": str(hub.folder), "hf-hub": hub.id}[spelling]
    expected = load_file(str(hub.folder / "model.safetensors"))
    model = build_model(ModelConfig(name="test_resnet", pretrained=source), num_classes=3)
    got = model.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected), "the weights are not the source's"

    other = build_model(ModelConfig(name="test_resnet", pretrained=source), num_classes=2).state_dict()
    head = {k for k in expected if k.startswith("fc.")}
    assert head and other["fc.weight"].shape[0] == 2  # other classes: a new head, every other tensor the source's
    assert all(torch.equal(other[k], expected[k]) for k in expected if k not in head)

    torch.manual_seed(0)  # not vacuous: a model from scratch differs
    scratch = build_model(ModelConfig(name="test_resnet"), num_classes=3).state_dict()
    stem = next(k for k in expected if expected[k].dim() == 4)
    assert not torch.equal(scratch[stem], expected[stem])
    assert _tree(hub.cache) == hub.before


def test_model_pretrained_sources_that_do_not_fit_are_one_line(hub, tmp_path):
    from checkbox_dist.core.config import ModelConfig
    from checkbox_dist.core.errors import UserError
    from checkbox_dist.model.build import build_model

    cases = {f"local-dir:{hub.folder}": ("resnet10t", "test_resnet"),  # another architecture
             "hf-hub:checkbox-test/missing": ("test_resnet", "HF_HUB_OFFLINE"),  # not in the offline cache
             "hf-hub:no-slash": ("test_resnet", "hf-hub:ORG/NAME"),
             f"local-dir:{tmp_path}": ("test_resnet", "config.json")}  # a folder without a timm model
    for source, (name, needle) in cases.items():
        with pytest.raises(UserError) as err:
            build_model(ModelConfig(name=name, pretrained=source), num_classes=3)
        assert needle in str(err.value) and "\n" not in str(err.value), (source, str(err.value))


@pytest.mark.system
def test_the_finetune_config_trains_from_a_hub_id_offline(exported, cache_dir, tmp_path):
    """The packaged fine-tuning config in a fresh process with the real environment variables; lr 0, so the
    trained weights must be exactly the Hub model's (BatchNorm running statistics aside)."""
    cache = tmp_path / "hf-cache"
    populate_hub_cache(cache, REPO_ID, exported)
    out = tmp_path / "run"
    proc = run_cli("train", "--config", "finetune_pretrained", *TINY, f"model.pretrained=hf-hub:{REPO_ID}",
                   "data.root=", "data.synth_n=60", "data.synth_seed=3", f"data.cache_dir={cache_dir}",
                   "data.image_width=48", "data.resize=letterbox", "optim.lr=0", "train.epochs=1",
                   f"train.output_dir={out}", env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}, fresh=True)
    assert f"pretrained=hf-hub:{REPO_ID}" in proc.stdout, proc.stdout[-2000:]
    expected = load_file(str(exported / "model.safetensors"))
    trained = torch.load(out / "checkpoints" / "best" / "model.pt", map_location="cpu", weights_only=True)["model"]
    weights = [k for k in expected if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(weights) > 10 and all(torch.equal(trained[k], expected[k]) for k in weights)


def test_configs_lists_the_finetune_config():
    code, out, _ = run_main("configs")
    assert code == 0 and "\n  finetune_pretrained " in out
    from checkbox_dist.core.config_loader import load_config
    from checkbox_dist.core.resources import config_file

    cfg = load_config(config_file("finetune_pretrained"))
    assert cfg.model.pretrained is True and cfg.pretrain.synth_n == 0 and cfg.optim.name == "adamw"
    assert 1e-4 <= cfg.optim.lr <= 5e-4 and cfg.schedule.warmup_epochs <= 2


# ---- predict, eval, export, serve -------------------------------------------------------------------------------

def _command(command: str, source: str, synth_root: Path, out: Path | None) -> tuple[int, str, str]:
    png = str(sorted((synth_root / "checked").glob("*.png"))[0])
    args = {"predict": ["predict", "--checkpoint", source, png, str(synth_root / "other"), "--format", "json"],
            "eval": ["eval", "--checkpoint", source, "--data", str(synth_root)],
            "export": ["export", "--checkpoint", source, "--format", "onnx"]}[command]
    return run_main(*args, *(["--out", str(out)] if out else []))


@pytest.mark.parametrize("command", ["predict", "eval", "export"])
def test_every_command_takes_a_hub_id(command, hub, synth_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outputs = {}
    for name, source in (("local", str(hub.folder)), ("hub", hub.id)):
        out = None if command == "predict" else tmp_path / name / ("model.onnx" if command == "export" else "")
        code, stdout, stderr = _command(command, source, synth_root, out)
        assert code == 0, stderr
        outputs[name] = (stdout, out)
    if command == "predict":
        assert json.loads(outputs["hub"][0]) == json.loads(outputs["local"][0])
    elif command == "eval":
        local, remote = (json.loads((outputs[n][1] / "eval.json").read_text()) for n in ("local", "hub"))
        assert (remote["top1"], remote["ece"], remote["confusion"]) == (local["top1"], local["ece"], local["confusion"])
    else:
        assert outputs["hub"][1].is_file() and "ONNX Runtime matches PyTorch" in outputs["hub"][0]
    if command != "predict":  # without --out: into the working folder, never into the Hub cache
        code, stdout, stderr = _command(command, hub.id, synth_root, None)
        assert code == 0, stderr
        assert str(tmp_path) in stdout, stdout
    assert _tree(hub.cache) == hub.before


def test_a_hub_id_that_is_not_there_is_one_line(hub, synth_root):
    code, _, stderr = _command("predict", "hf-hub:checkbox-test/missing", synth_root, None)
    assert code == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "HF_HUB_OFFLINE" in stderr and "checkbox-test/missing" in stderr


@pytest.mark.system
def test_serve_takes_a_hub_id(exported, synth_root, tmp_path):
    import httpx

    from checkbox_dist.bench.serve import free_port, wait_healthy
    from checkbox_dist.infer.predictor import Predictor

    cache = tmp_path / "hf-cache"
    populate_hub_cache(cache, REPO_ID, exported)
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="2", HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1",
               NO_PROXY="127.0.0.1", PYTHONPATH=str(REPO))
    log = tmp_path / "server.log"
    with log.open("w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "checkbox_dist", "serve", "--checkpoint", f"hf-hub:{REPO_ID}",
                                 "--port", str(port), "--log-level", "warning"], stdout=handle,
                                stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout_s=240)
        png = sorted((synth_root / "other").glob("*.png"))[0]
        answer = httpx.post(f"{url}/predict", files={"file": ("a.png", png.read_bytes(), "image/png")}).json()
        info = httpx.get(f"{url}/model").json()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    expected = Predictor([exported], device="cpu")
    assert info["classes"] == expected.classes
    assert answer["confidence"] == expected.predict_files([png])[0]["confidence"]
    assert "Traceback" not in log.read_text()
