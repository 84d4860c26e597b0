"""The end-of-run review through the real trackers, read back from their files (no mocks): W&B in offline mode
(the run file, W&B's local artifact staging) and TensorBoard event files.

W&B: the best checkpoint as a model Artifact (aliases best + latest; metadata classes, metrics, config hash),
and a Table of the val images the best model gets wrong, checked row by row against `Predictor`. A second
`train` of the finished run (same W&B id) logs neither again. TensorBoard: hparams with the final metrics and
the best model's confusion matrix.

~25 s on 2 cores: one 2-epoch tiny training run and its re-run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli, tiny_train_args
from wandb_records import records


def _artifacts(run_files: list[Path]) -> list:
    return [r.artifact for f in run_files for r in records(f) if r.WhichOneof("record_type") == "artifact"]


def _staged(artifact, path: str) -> Path:
    """The local copy W&B staged for a file of an artifact (what `wandb sync` uploads)."""
    entry = next(c for c in artifact.manifest.contents if c.path == path)
    return Path(entry.local_path)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("trackers")
    out = root / "run"
    # No credentials: offline; W&B stages artifact files under HOME.
    env = {"HOME": str(root), "WANDB_API_KEY": None, "WANDB_MODE": None, "WANDB_DIR": None}
    args = tiny_train_args(out, cache_dir, "train.epochs=2", "tracking.backends=[wandb,tensorboard]")
    first = run_cli(*args, env=env)
    again = run_cli(*args, "train.resume=auto", env=env)  # the finished run, once more, same W&B id
    return out, first, again


def test_wandb_gets_the_model_artifact_once(tracked_run):
    from checkbox_dist.core.config import recipe_hash
    from checkbox_dist.core.config_loader import load_config

    out, first, again = tracked_run
    assert "W&B: logged artifact model-" in first.stdout
    assert "logged before" in again.stdout and "W&B: logged artifact" not in again.stdout
    run_files = sorted((out / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 2  # one per process, one W&B run id
    wandb_id = (out / "wandb_id.txt").read_text().strip()
    models = [a for a in _artifacts(run_files) if a.type == "model"]
    assert len(models) == 1, "a re-run of a finished run must not log the model again"
    model = models[0]
    assert model.name == f"model-{wandb_id}" and set(model.aliases) == {"best", "latest"}
    meta = json.loads(model.metadata)
    summary = json.loads((out / "summary.json").read_text())
    best = out / "checkpoints" / "best"
    assert meta["classes"] == ["checked", "other", "unchecked"]
    assert meta["metrics"]["val_top1"] == pytest.approx(summary["val_top1"])
    assert meta["metrics"]["temperature"] == pytest.approx(summary["temperature"])
    assert meta["config_hash"] == recipe_hash(load_config(out / "config.yaml"))
    assert meta["checkpoint_sha256"] == json.loads((best / "meta.json").read_text())["files"]["model.pt"]
    assert {c.path for c in model.manifest.contents} == {"model.pt", "meta.json"}
    assert _staged(model, "model.pt").read_bytes() == (best / "model.pt").read_bytes()  # the calibrated best


def test_wandb_table_lists_exactly_the_val_errors(tracked_run):
    import torch

    from checkbox_dist.core.config_loader import load_config
    from checkbox_dist.data.split import build_split
    from checkbox_dist.data.synthetic import synthetic_root
    from checkbox_dist.infer.predictor import Predictor

    out, _, _ = tracked_run
    run_files = sorted((out / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))
    tables = [a for a in _artifacts(run_files) if a.type == "run_table"]
    assert len(tables) == 1 and "valerrors" in tables[0].name
    table = json.loads(_staged(tables[0], "val/errors.table.json").read_text())
    classes = ["checked", "other", "unchecked"]
    assert table["columns"] == ["image", "file", "given", "predicted", "confidence", *[f"p_{c}" for c in classes]]
    # Independently: the best checkpoint on the val split, as `predict` computes it.
    predictor = Predictor([out / "checkpoints" / "best"], device="cpu")
    cfg = load_config(out / "config.yaml")
    split = build_split(synthetic_root(cfg.data), "", cfg.data.val_fraction, cfg.data.split_seed)
    probs = predictor.predict_tensors([torch.stack([predictor.decode(p)[0] for p, _ in split.val])])
    wrong = {str(p): (classes[y], classes[int(probs[i].argmax())], probs[i])
             for i, (p, y) in enumerate(split.val) if int(probs[i].argmax()) != y}
    assert 0 < len(wrong) < len(split.val)  # the comparison has both kinds of rows to tell apart
    assert {row[1] for row in table["data"]} == set(wrong)
    for image, file, given, predicted, confidence, *p in table["data"]:
        assert (given, predicted) == wrong[file][:2]
        assert p == pytest.approx(wrong[file][2].tolist(), abs=1e-5) and confidence == pytest.approx(max(p))
        assert image["_type"] == "image-file" and image["path"].endswith(Path(file).name)
    history = [r for f in run_files for r in records(f) if r.WhichOneof("record_type") == "history"]
    keys = {"/".join(i.nested_key) or i.key for r in history for i in r.history.item}
    assert "val/errors/_type" in keys and "best/confusion_matrix/_type" in keys


def test_tensorboard_gets_hparams_with_final_metrics_and_the_matrix(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out, _, _ = tracked_run
    summary = json.loads((out / "summary.json").read_text())
    final = EventAccumulator(str(out / "tracking" / "checkbox_dist" / "final"))
    final.Reload()
    assert final.Scalars("best/val_top1")[-1].value == pytest.approx(summary["val_top1"])
    assert final.Scalars("best/temperature")[-1].value == pytest.approx(summary["temperature"])
    content = final.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model.name"].string_value == "test_resnet"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"best/val_top1", "best/val_macro_f1", "best/epoch"}
    main = EventAccumulator(str(out / "tracking" / "checkbox_dist"), size_guidance={"images": 0})
    main.Reload()
    assert "best/confusion_matrix" in main.Tags()["images"]
    text = main.Tensors("val/errors/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("| file | given | predicted | confidence |")  # the val errors, as on W&B
    assert len(list((out / "tracking" / "checkbox_dist").glob("final/events.out.tfevents.*"))) == 1  # not re-logged
    assert (out / "plots" / "confusion_matrix_best.png").stat().st_size > 5_000


def test_every_accelerate_tracker_is_a_backend_and_a_missing_one_is_one_line(tmp_path, cache_dir):
    """tracking.backends takes the trackers Accelerate supports; one whose package is not installed used to be
    dropped by Accelerate with a warning (the run logged nowhere): it is one line with the install command, before
    any run folder exists."""
    from checkbox_dist.core.config_loader import load_config

    for name in ("wandb", "tensorboard", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio"):
        assert load_config(None, [f"tracking.backends=[{name}]"]).tracking.backends == [name]
    out = tmp_path / "run"
    proc = run_cli(*tiny_train_args(out, cache_dir, "tracking.backends=[aim]"), check=False)  # aim: not installed
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: tracking.backends: aim is not installed in this environment: pip install aim")
    assert not out.exists()


# ---- MLflow: a real local store (SQLite in the run folder, the default), read back with MLflow's own client -----

@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("mlflow")
    out = root / "run"
    env = {"MLFLOW_TRACKING_URI": None, "MLFLOW_EXPERIMENT_NAME": None, "MLFLOW_RUN_ID": None}  # the run's default
    args = tiny_train_args(out, cache_dir, "train.epochs=2", "tracking.backends=[mlflow]")
    first = run_cli(*args, env=env, cwd=root)
    again = run_cli(*args, "train.resume=auto", env=env, cwd=root)  # the finished run once more: the same MLflow run
    return out, first, again


def _artifact_paths(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += _artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def test_mlflow_holds_params_epoch_metrics_the_matrix_and_the_model(mlflow_run, tmp_path):
    import torch
    from mlflow import MlflowClient

    from checkbox_dist.core.config import to_flat_dict
    from checkbox_dist.core.config_loader import load_config
    from conftest import read_metrics

    out, first, again = mlflow_run
    client = MlflowClient(f"sqlite:///{out / 'tracking' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("checkbox_dist")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "a resumed run continues its MLflow run"
    run = runs[0]
    assert run.info.run_id == (out / "mlflow_run_id.txt").read_text().strip() and run.info.status == "FINISHED"
    assert run.info.run_name == "run"

    flat = to_flat_dict(load_config(out / "config.yaml"))
    assert {k: run.data.params[k] for k in ("model.name", "train.epochs", "optim.lr")} == \
        {"model.name": "test_resnet", "train.epochs": "2", "optim.lr": str(flat["optim.lr"])}
    assert set(run.data.params) == set(flat)

    epochs = [r for r in read_metrics(out) if r["kind"] == "epoch"]
    history = client.get_metric_history(run.info.run_id, "val/top1")
    assert [m.value for m in history] == pytest.approx([r["val_top1"] for r in epochs]) and len(epochs) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert run.data.metrics["best/val_top1"] == pytest.approx(summary["val_top1"])
    assert run.data.metrics["best/temperature"] == pytest.approx(summary["temperature"])

    paths = _artifact_paths(client, run.info.run_id)
    assert {"plots/confusion_matrix_epoch_1.png", "plots/confusion_matrix_epoch_2.png",
            "plots/confusion_matrix_best.png", "model/model.pt", "model/meta.json", "val_errors.json"} <= set(paths)
    local = Path(client.download_artifacts(run.info.run_id, "model", str(tmp_path)))
    best = out / "checkpoints" / "best"
    assert (local / "model.pt").read_bytes() == (best / "model.pt").read_bytes()  # the calibrated best
    assert torch.load(local / "model.pt", weights_only=True)["classes"] == ["checked", "other", "unchecked"]
    errors = json.loads(Path(client.download_artifacts(run.info.run_id, "val_errors.json", str(tmp_path))).read_text())
    assert errors["columns"][:4] == ["file", "given", "predicted", "confidence"]
    assert run.data.tags["checkbox_dist.config_hash"]
    assert "logged before" in again.stdout
    assert paths.count("model/model.pt") == 1 and not (out.parent / "mlruns").exists()  # nothing outside the run


def test_mlflow_store_is_the_config_or_the_environment_else_the_run_folder(tmp_path, monkeypatch):
    from checkbox_dist.train.output import mlflow_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "")  # recorded, so the test leaves the environment as it found it
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")
    assert mlflow_store("", tmp_path) == (f"sqlite:///{tmp_path / 'tracking' / 'mlflow.db'}",
                                          (tmp_path / "tracking" / "mlflow-artifacts").as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert mlflow_store("", tmp_path) == ("http://mlflow.example:5000", None)  # the server's artifact store
    assert mlflow_store("file:///x/mlruns", tmp_path) == ("file:///x/mlruns", None)
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"  # no request to MLflow's telemetry server either
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")  # unless the user asks for it
    mlflow_store("", tmp_path)
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"


def test_a_missing_mlflow_names_the_extra(monkeypatch):
    import importlib.util

    from checkbox_dist.core.errors import UserError
    from checkbox_dist.train.session import check_trackers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(UserError, match=r"^tracking.backends: mlflow is not installed in this environment: "
                                        r"pip install 'checkbox_dist\[mlflow\]'$"):
        check_trackers(["mlflow"])
