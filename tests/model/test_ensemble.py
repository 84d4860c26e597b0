"""Ensembles as one model: `train ... train.ensemble_members=2` (tiny refits) writes RUN/ensemble, and predict,
eval, export (one ONNX graph, parity-checked), serve (the ASGI app) and bench-infer all take that folder as one
model; members that disagree are refused with one line. ~40 s on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_cli, tiny_train_args
from checkbox_dist.infer.predictor import Predictor
from checkbox_dist.model import checkpoint, ensemble


@pytest.fixture(scope="module")
def ens(tmp_path_factory, cache_dir) -> dict:
    out = tmp_path_factory.mktemp("ens") / "run"
    proc = run_cli(*tiny_train_args(out, cache_dir, "data.val_fraction=0", "train.epochs=2",
                                    "train.ensemble_members=2", "data.image_width=48"))
    return {"run": out, "folder": out / "ensemble", "stdout": proc.stdout}


def _images(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "synth-n60-s3").glob("*/*.png"))[::10]


def test_train_writes_the_members_and_one_ensemble_folder(ens):
    run, folder = ens["run"], ens["folder"]
    assert (run / "members" / "seed_42" / "summary.json").is_file() and (run / "members" / "seed_43").is_dir()
    manifest = json.loads((folder / "ensemble.json").read_text())
    assert manifest["members"] == ["member_0", "member_1"] and manifest["seeds"] == [42, 43]
    assert json.loads((run / "summary.json").read_text())["ensemble"] == str(folder)
    assert f"predict|eval|serve|export|bench-infer --checkpoint {folder}" in ens["stdout"]
    a, b = (torch.load(folder / m / "model.pt", weights_only=True)["model"] for m in ("member_0", "member_1"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # two seeds, two models


def test_predict_and_eval_average_the_members(ens, cache_dir, tmp_path):
    folder, files = ens["folder"], _images(cache_dir)
    whole = Predictor([folder], device="cpu")
    members = [Predictor([folder / m], device="cpu") for m in ("member_0", "member_1")]
    mean = sum(torch.tensor([list(r["confidence"].values()) for r in p.predict_files(files)]) for p in members) / 2
    got = torch.tensor([list(r["confidence"].values()) for r in whole.predict_files(files)])
    assert len(whole.members) == 2 and torch.allclose(got, mean, atol=2e-6)
    each = [torch.tensor([list(r["confidence"].values()) for r in p.predict_files(files)]) for p in members]
    assert float((each[0] - each[1]).abs().max()) > 1e-3  # the members differ: the mean is a real one
    run_cli("predict", "--checkpoint", str(folder), "--format", "json", "--output", str(tmp_path / "p.json"),
            *map(str, files))
    written = json.loads((tmp_path / "p.json").read_text())
    assert [r["input"] for r in written] == [str(f) for f in files]
    cli_probs = torch.tensor([list(r["confidence"].values()) for r in written])
    assert torch.allclose(cli_probs, mean, atol=2e-6)  # the command writes the members' mean (6 decimals)
    data = cache_dir / "synth-n60-s3"
    run_cli("eval", "--checkpoint", str(folder), "--data", str(data))
    report = json.loads((folder / "eval" / "eval.json").read_text())
    assert report["n"] == 60 and len(report["temperatures"]) == 2
    every = sorted(data.glob("*/*.png"))
    right = [r["class"] == f.parent.name for r, f in zip(whole.predict_files(every), every)]
    assert report["top1"] == pytest.approx(sum(right) / len(right), abs=1e-6)  # the ensemble's accuracy


def test_export_onnx_is_one_graph_that_matches_the_ensemble(ens, cache_dir):
    folder = ens["folder"]
    proc = run_cli("export", "--checkpoint", str(folder), "--format", "onnx")
    assert "ONNX Runtime matches PyTorch" in proc.stdout and (folder / "model.onnx").is_file()
    files = _images(cache_dir)
    onnx = Predictor([folder], backend="onnx")
    assert len(onnx.members) == 1 and onnx.members[0].meta["ensemble"]["members"] == 2
    torch_probs = Predictor([folder], device="cpu").predict_files(files)
    for a, b in zip(onnx.predict_files(files), torch_probs):
        assert a["class"] == b["class"] and max(abs(a["confidence"][c] - b["confidence"][c]) for c in a["confidence"]) < 1e-4
    refused = run_cli("export", "--checkpoint", str(folder), "--format", "timm", check=False)
    assert refused.returncode == 2 and "ensemble" in refused.stderr


def test_serve_answers_with_the_ensemble(ens, cache_dir):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from checkbox_dist.serve.api import create_app
    from checkbox_dist.serve.settings import Settings

    predictor = Predictor([ens["folder"]], device="cpu")
    file = _images(cache_dir)[0]
    with TestClient(create_app(predictor, Settings(model_details=True))) as client:  # details: member sources
        info = client.get("/model").json()
        answer = client.post("/predict", files={"file": (file.name, file.read_bytes(), "image/png")}).json()
    assert json.dumps(info).count("member_") == 2
    expected = predictor.predict_files([file])[0]
    assert answer["class"] == expected["class"]
    assert answer["confidence"] == pytest.approx(expected["confidence"], abs=1e-5)


def test_bench_infer_reports_the_cost_per_member_count(ens, tmp_path):
    proc = run_cli("bench-infer", "--checkpoint", str(ens["folder"]), "--n", "6", "--repeats", "1", "--iters", "5",
                   "--batch", "4", "--onnx-exporter", "legacy", "--json", str(tmp_path / "b.json"))
    for row in ("eager, 1 of 2 members", "eager, 2 of 2 members", "ONNX Runtime (2 members)"):
        assert row in proc.stdout
    assert set(json.loads((tmp_path / "b.json").read_text())["results"]) >= {"eager, 2 of 2 members"}


def test_members_that_disagree_are_refused_with_one_line(ens, tmp_path):
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(ens["folder"], bad, ignore=shutil.ignore_patterns("*.onnx", "eval"))
    payload, _ = checkpoint.load(bad / "member_1")
    payload["preprocess"] = dict(payload["preprocess"], image_size=40)
    checkpoint.save(bad / "member_1", payload, None)
    with pytest.raises(checkpoint.CheckpointError, match="member_1 has preprocessing"):
        ensemble.load_models(bad)
    for command in (["predict", "--checkpoint", str(bad), "x.png"], ["export", "--checkpoint", str(bad)]):
        proc = run_cli(*command, check=False)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "cannot be averaged" in proc.stderr
    with pytest.raises(checkpoint.CheckpointError, match="cannot make an ensemble"):
        ensemble.write(tmp_path / "new", [ens["folder"] / "member_0", bad / "member_1"])


def test_members_share_the_stage_one_a_single_run_of_the_recipe_uses(tmp_path):
    from checkbox_dist.core.config_loader import load_config
    from checkbox_dist.train.members import member_configs
    from checkbox_dist.train.pretrain import stage_config

    cfg = load_config(None, ["pretrain.synth_n=48", "train.ensemble_members=3", "data.val_fraction=0"])
    single = load_config(None, ["pretrain.synth_n=48", "data.val_fraction=0"])
    members = member_configs(cfg, tmp_path)
    assert [m.train.seed for m in members] == [42, 43, 44] and {m.train.ensemble_members for m in members} == {1}
    assert {m.pretrain.output_dir for m in members} == {stage_config(single).train.output_dir}
    assert members[1].train.output_dir == str(tmp_path / "members" / "seed_43")
