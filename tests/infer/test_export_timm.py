"""`export --format timm`: a folder timm alone loads, whose model card's snippet reproduces `predict`.

The parity check runs the snippet exactly as the card prints it (extracted from README.md), in a Python
process that never imports checkbox_dist, on real crops (../shared/checkbox_state_v2 when present), on
synthetic RGBA crops with transparency and on odd shapes, for three preprocessing variants: letterbox on
white (the trained session checkpoint), stretch, and a 4-channel (alpha) model on a dark background. A
mutated snippet (alpha dropped instead of composited) must fail the same comparison, so it is not vacuous.

~25 s on 2 cores (one subprocess runs every snippet; plus the session's tiny training run when alone).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from conftest import REAL_DATA, REPO, run_main

# Max |p_snippet - p_predict| over every image. The inputs are bit-identical; the probabilities differ only by
# float32 rounding of a batch-1 against a batch-32 forward pass: measured 3e-8 to 1.2e-7 (docs/INFERENCE.md).
TOLERANCE = 1e-6
SNIPPET = re.compile(r"^## How to get the same probabilities with timm$.*?^```python\n(.*?)^```$", re.S | re.M)

# The subprocess: runs each card snippet verbatim in its export folder, then its predict() on every image.
RUNNER = r"""
import json, os, sys
jobs = json.load(open(sys.argv[1]))
results = {}
for job in jobs:
    os.chdir(job["folder"])  # the snippet says folder = "." and predicts crop.png, both found there
    namespace = {"__name__": "card_snippet"}
    exec(compile(open(job["snippet"]).read(), job["snippet"], "exec"), namespace)
    results[job["name"]] = {path: namespace["predict"](path) for path in job["images"]}
assert "checkbox_dist" not in sys.modules, "the snippet must not need checkbox_dist"
print("RESULTS " + json.dumps(results))
"""


def extract_snippet(card: str) -> str:
    found = SNIPPET.search(card)
    assert found, "the card has no python block under its usage heading"
    return found.group(1)


def _export(checkpoint: Path, out: Path, *extra: str) -> Path:
    code, stdout, stderr = run_main("export", "--checkpoint", str(checkpoint), "--format", "timm", "--out", str(out),
                                    *extra)
    assert code == 0, stderr
    assert f"wrote {out}/" in stdout
    return out


def _odd_crops(folder: Path, synth_root: Path) -> list[Path]:
    """Transparent and half-transparent RGBA, extreme aspect ratios, tiny, palette and greyscale files."""
    folder.mkdir(parents=True, exist_ok=True)
    source = Image.open(sorted((synth_root / "checked").glob("*.png"))[0]).convert("RGBA")
    made = {"wide.png": source.resize((300, 17)), "tall.png": source.resize((9, 120)),
            "tiny.png": source.resize((5, 3))}
    half = source.copy()
    half.putalpha(Image.linear_gradient("L").resize(source.size))  # alpha 0..255 top to bottom
    made["gradient_alpha.png"] = half
    made["palette.png"] = source.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    made["grey.png"] = source.convert("LA")
    for name, image in made.items():
        image.save(folder / name)
    return [folder / name for name in made]


def _images(synth_root: Path, odd: list[Path], n_real: int = 40) -> list[Path]:
    from checkbox_dist.data.images import list_images

    synthetic = list_images(synth_root)
    transparent = [p for p in synthetic if Image.open(p).convert("RGBA").getextrema()[3][0] < 255]
    assert len(transparent) >= 5, "the synthetic set should hold crops with transparent pixels"
    real = list_images(REAL_DATA) if REAL_DATA.is_dir() else []
    real = real[:: max(1, len(real) // n_real)][:n_real]  # spread over every class folder
    return real + synthetic[:: 3] + transparent[:8] + odd


def _variant_checkpoints(infer_checkpoint: Path, root: Path) -> dict[str, Path]:
    """letterbox: the trained session checkpoint. stretch: its weights, stretch preprocessing, temperature 1 (so
    logit differences are not divided by T). alpha: a 4-channel model, dark background, alpha as input."""
    from checkbox_dist.core.config import ModelConfig
    from checkbox_dist.data.images import PreprocessSpec
    from checkbox_dist.model import checkpoint
    from checkbox_dist.model.build import build_model

    payload, _ = checkpoint.load(infer_checkpoint)
    stretch = dict(payload, preprocess=dict(payload["preprocess"], resize="stretch"), temperature=1.0)
    checkpoint.save(root / "stretch", stretch, None)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="test_resnet"), 3, in_chans=4)
    spec = PreprocessSpec(image_size=32, image_width=40, background="#202020", alpha_channel=True)
    alpha = checkpoint.build_payload(model.state_dict(), payload["classes"], "test_resnet", spec.to_dict(),
                                     payload["config"], {}, epoch=0, global_step=0, temperature=0.5)
    checkpoint.save(root / "alpha", alpha, None)
    return {"letterbox": infer_checkpoint, "stretch": root / "stretch", "alpha": root / "alpha"}


def _mutated(snippet: str) -> str:
    """Alpha dropped (transparent pixels keep whatever colour they hold) instead of composited."""
    mutated = snippet.replace("alpha = a[..., 3:] / 255.0", "alpha = a[..., 3:] * 0.0 + 1.0")
    assert mutated != snippet
    return mutated


@pytest.fixture(scope="module")
def parity(infer_checkpoint, synth_root, tmp_path_factory):
    """Per variant: the export folder, the images, the snippet's and the Predictor's probabilities."""
    from checkbox_dist.infer.predictor import Predictor

    root = tmp_path_factory.mktemp("timm")
    images = _images(synth_root, _odd_crops(root / "odd", synth_root))
    jobs, out = [], {}
    for name, ckpt in _variant_checkpoints(infer_checkpoint, root / "ckpt").items():
        folder = _export(ckpt, root / name)
        snippet = extract_snippet((folder / "README.md").read_text())
        for job, code in ((name, snippet), (f"{name}-mutated", _mutated(snippet))):
            work = root / "work" / job  # a copy of the folder, as a user downloads it, with a crop.png
            shutil.copytree(folder, work)
            shutil.copy(images[-1], work / "crop.png")
            (root / f"{job}.py").write_text(code)
            jobs.append({"name": job, "folder": str(work), "snippet": str(root / f"{job}.py"),
                         "images": [str(p) for p in images]})
        predictor = Predictor([ckpt], device="cpu")
        batches = [torch.stack([predictor.decode(p)[0] for p in images[i:i + 32]]) for i in range(0, len(images), 32)]
        out[name] = {"folder": folder, "checkpoint": ckpt, "classes": predictor.classes,
                     "reference": torch.cat([predictor.predict_tensors([b]) for b in batches])}
    (root / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(root / "jobs.json")], capture_output=True, text=True,
                          timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1].removeprefix("RESULTS "))
    for name, entry in out.items():
        for key, job in (("snippet", name), ("mutated", f"{name}-mutated")):
            entry[key] = torch.tensor([[results[job][str(p)][c] for c in entry["classes"]] for p in images])
    return out, images


@pytest.mark.parametrize("variant", ["letterbox", "stretch", "alpha"])
def test_the_cards_snippet_reproduces_predict_with_timm_alone(parity, variant):
    out, images = parity
    entry = out[variant]
    diff = float((entry["snippet"] - entry["reference"]).abs().max())
    print(f"{variant}: max |p_snippet - p_predict| = {diff:.2e} over {len(images)} images"
          f"{' (real crops included)' if REAL_DATA.is_dir() else ''}")
    assert diff <= TOLERANCE
    assert entry["reference"].std(0).max() > 1e-3  # the model tells images apart: the comparison means something
    # The mutation matters wherever crops are transparent: the comparison catches a wrong preprocessing.
    assert float((entry["mutated"] - entry["reference"]).abs().max()) > 1e-4


def test_the_comparison_included_real_crops(parity):
    """The real crops are part of `parity`'s images when present; where they are not, say so (a visible skip)."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real crops not present at {REAL_DATA}: the snippet was compared on synthetic and odd crops only")
    out, images = parity
    real = [i for i, p in enumerate(images) if REAL_DATA in p.parents]
    assert len(real) >= 10, len(real)
    for entry in out.values():
        assert float((entry["snippet"][real] - entry["reference"][real]).abs().max()) <= TOLERANCE


def test_predict_cli_matches_the_snippet(parity):
    out, images = parity
    entry = out["letterbox"]
    paths = [str(p) for p in images]
    for source in (entry["checkpoint"], entry["folder"]):  # our checkpoint, and the timm folder itself
        code, stdout, _ = run_main("predict", "--checkpoint", str(source), *paths, "--format", "jsonl")
        assert code == 0
        records = [json.loads(line) for line in stdout.splitlines()]
        got = torch.tensor([[r["confidence"][c] for c in entry["classes"]] for r in records])
        assert float((got - entry["snippet"]).abs().max()) <= 5e-7 + TOLERANCE  # predict rounds to 6 decimals


def test_config_json_and_model_card(parity):
    from checkbox_dist.core.config_loader import load_config

    out, _ = parity
    folder, classes = out["letterbox"]["folder"], out["letterbox"]["classes"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                        "training_config.yaml"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == "test_resnet" and cfg["num_classes"] == 3 and cfg["label_names"] == classes
    pre = cfg["pretrained_cfg"]
    assert pre["input_size"] == [3, 32, 48] and pre["interpolation"] == "bilinear" and pre["crop_mode"] == "border"
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225] and pre["crop_pct"] == 1.0
    block = cfg["checkbox_dist"]
    payload = torch.load(out["letterbox"]["checkpoint"] / "model.pt", weights_only=True)
    assert block["temperature"] == payload["temperature"] != 1.0 and block["preprocess"] == payload["preprocess"]
    pretrained = {name: json.loads((out[name]["folder"] / "config.json").read_text())["pretrained_cfg"]
                  for name in ("alpha", "stretch")}
    assert pretrained["alpha"]["input_size"] == [4, 32, 40] and pretrained["stretch"]["crop_mode"] == "squash"

    card = (folder / "README.md").read_text()
    assert extract_snippet(card) in (REPO / "docs" / "INFERENCE.md").read_text()  # the documented one is current
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "timm" and "image-classification" in front["tags"]
    assert front["metrics"] == ["accuracy", "f1"]
    results = front["model-index"][0]["results"][0]["metrics"]
    assert results[0]["value"] == pytest.approx(payload["metrics"]["val_top1"], abs=1e-4)
    for needle in ("## Training data", "## Recipe and scores", "## Intended use", "## Limitations", "letterbox",
                   "over **#ffffff**", "softmax(logits / T)", "checkbox-dist train --config training_config.yaml",
                   "No cross-validation score"):
        assert needle in card, needle
    assert "over **#202020**" in (out["alpha"]["folder"] / "README.md").read_text()
    assert load_config(folder / "training_config.yaml").model.name == "test_resnet"  # a config train accepts


def test_eval_and_serve_accept_the_timm_folder(parity, synth_root, tmp_path):
    from fastapi.testclient import TestClient

    from checkbox_dist.infer.predictor import Predictor
    from checkbox_dist.serve.api import create_app

    out, _ = parity
    entry = out["letterbox"]
    reports = {}
    for name, source in (("ckpt", entry["checkpoint"]), ("timm", entry["folder"] / "config.json")):
        code, _, stderr = run_main("eval", "--checkpoint", str(source), "--data", str(synth_root), "--out",
                                   str(tmp_path / name))
        assert code == 0, stderr
        reports[name] = json.loads((tmp_path / name / "eval.json").read_text())
    assert reports["timm"]["top1"] == reports["ckpt"]["top1"] and reports["timm"]["ece"] == reports["ckpt"]["ece"]

    png = sorted((synth_root / "other").glob("*.png"))[0]
    with TestClient(create_app(Predictor([entry["folder"]], device="cpu"))) as client:
        answer = client.post("/predict", files={"file": ("a.png", png.read_bytes(), "image/png")}).json()
        info = client.get("/model").json()
    expected = Predictor([entry["checkpoint"]], device="cpu").predict_files([png])[0]
    assert answer["confidence"] == expected["confidence"]
    assert info["classes"] == entry["classes"]


def test_cv_summary_goes_into_the_card(infer_checkpoint, tmp_path):
    cv_dir = tmp_path / "cv"
    cv_dir.mkdir()
    summary = {"folds": 3, "n_images": 60, "classes": ["checked", "other", "unchecked"], "selection": "final",
               "config": "configs/quickstart.yaml", "root": "/data/widgets", "seed": 42,
               "std_kind": "sample std over folds (n-1)", "top1": {"mean": 0.8123, "std": 0.0311},
               "macro_f1": {"mean": 0.8011, "std": 0.0402}, "model": "test_resnet", "image_size": 32,
               "image_width": 48}
    (cv_dir / "cv_summary.json").write_text(json.dumps(summary))
    folder = _export(infer_checkpoint, tmp_path / "with-cv", "--cv-summary", str(cv_dir / "cv_summary.json"),
                     "--license", "mit")
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "mit" and front["model-index"][0]["name"] == "with-cv"
    assert {"type": "accuracy", "value": 0.8123, "name": "3-fold CV top-1 (mean)"} in \
        front["model-index"][0]["results"][0]["metrics"]
    assert "top-1 **0.8123 ± 0.0311**" in card
    assert "checkbox-dist cv --config configs/quickstart.yaml --folds 3 --seed 42 data.root=/data/widgets" in card

    (cv_dir / "cv_summary.json").write_text(json.dumps(dict(summary, model="resnet50")))
    code, _, stderr = run_main("export", "--checkpoint", str(infer_checkpoint), "--format", "timm", "--out",
                               str(tmp_path / "bad"), "--cv-summary", str(cv_dir / "cv_summary.json"))
    assert code == 2 and "not this recipe" in stderr and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("case, message", [
    ("foreign", "not one `checkbox-dist export --format timm` wrote"),
    ("edited", "label_names is ['unchecked', 'other', 'checked'] but"),
    ("empty", "not a checkpoint folder"),
])
def test_folders_we_cannot_trust_are_refused_in_one_line(parity, tmp_path, synth_root, case, message):
    import timm
    from timm.models import save_for_hf

    out, _ = parity
    folder = tmp_path / case
    if case == "foreign":  # a timm folder from elsewhere: no classes, preprocessing or temperature
        save_for_hf(timm.create_model("test_resnet", num_classes=3), str(folder), safe_serialization=True)
    elif case == "edited":  # ours, with the class order changed by hand
        shutil.copytree(out["letterbox"]["folder"], folder)
        cfg = json.loads((folder / "config.json").read_text())
        cfg["label_names"] = list(reversed(cfg["label_names"]))
        (folder / "config.json").write_text(json.dumps(cfg))
    else:
        folder.mkdir()
    image = str(sorted((synth_root / "checked").glob("*.png"))[0])
    code, _, stderr = run_main("predict", "--checkpoint", str(folder), image)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_cv_summary_with_another_format_is_one_line(parity):
    out, _ = parity
    code, _, stderr = run_main("export", "--checkpoint", str(out["letterbox"]["checkpoint"]), "--format", "onnx",
                               "--cv-summary", "x.json")
    assert code == 2 and "--cv-summary applies to --format timm only" in stderr
