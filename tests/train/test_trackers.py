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
    from checkbox_dist.core.config import load_config, recipe_hash

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

    from checkbox_dist.core.config import load_config
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
    assert len(list((out / "tracking" / "checkbox_dist").glob("final/events.out.tfevents.*"))) == 1  # not re-logged
    assert (out / "plots" / "confusion_matrix_best.png").stat().st_size > 5_000


def test_every_accelerate_tracker_is_a_backend_and_a_missing_one_is_one_line(tmp_path, cache_dir):
    """tracking.backends takes the trackers Accelerate supports; one whose package is not installed used to be
    dropped by Accelerate with a warning (the run logged nowhere): it is one line with the install command, before
    any run folder exists."""
    from checkbox_dist.core.config import load_config

    for name in ("wandb", "tensorboard", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio"):
        assert load_config(None, [f"tracking.backends=[{name}]"]).tracking.backends == [name]
    out = tmp_path / "run"
    proc = run_cli(*tiny_train_args(out, cache_dir, "tracking.backends=[aim]"), check=False)  # aim: not installed
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: tracking.backends: aim is not installed in this environment: pip install aim")
    assert not out.exists()
