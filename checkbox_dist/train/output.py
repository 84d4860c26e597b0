"""RunOutput: every side effect of a training run -- prints, log.txt, metrics.jsonl, plots, trackers --
goes through this one object, which acts on the main process only. The loop never checks ranks itself.

Run folder (train.output_dir):
    config.yaml              the resolved config of this run
    log.txt                  everything printed
    metrics.jsonl            one JSON line per epoch (and per log interval: "kind": "step")
    plots/metrics_plot.png   train/val loss and accuracy curves
    plots/confusion_matrix_epoch_<N>.png
    plots/confusion_matrix_best.png   the best checkpoint on val, at the end of the run
    checkpoints/{last,best,epoch_<N>}/
    tracking/                W&B (offline) and TensorBoard files; MLflow's store by default (mlflow.db and
                             mlflow-artifacts/: `mlflow_store`)
    tracking/end_of_run.json what the end-of-run review logged, so a re-run with the same id does not repeat it
    wandb_id.txt, mlflow_run_id.txt   the tracker runs this run logs to, so a resumed run continues them

During the run, through Accelerate's trackers: the flattened config (W&B config, TensorBoard/MLflow params), the
metrics of each log interval and epoch, and each epoch's confusion matrix (an image on W&B and TensorBoard, a PNG
artifact under plots/ on MLflow).

End of run (`end_of_run`, after the best checkpoint is calibrated), what each backend can take: the best model's
confusion matrix and its final val metrics (best/...: W&B run summary, TensorBoard hparams, MLflow metrics); the
best checkpoint as a model (W&B Artifact with aliases best, latest and metadata classes, metrics, config hash;
MLflow artifacts model/model.pt + model/meta.json, the metadata as tags); the val images the best model gets
wrong (a W&B Table, MLflow val_errors.json, TensorBoard text).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from checkbox_dist.core import plots
from checkbox_dist.core.config import Config, recipe_hash, to_flat_dict
from checkbox_dist.core.config_loader import dump_yaml
from checkbox_dist.core.files import atomic_write_json, atomic_write_text
from checkbox_dist.data.images import PreprocessSpec
from checkbox_dist.model import checkpoint

# The run summary's numbers every tracker gets at the end of a run (W&B summary, TensorBoard hparams metrics).
FINAL_METRICS = ("val_top1", "val_macro_f1", "val_loss", "val_loss_calibrated", "val_ece", "val_ece_calibrated",
                 "temperature", "best_epoch")
MAX_ERROR_ROWS = 1000  # rows of the W&B table of wrong val predictions
MARKER = "end_of_run.json"
MLFLOW_ID = "mlflow_run_id.txt"


@dataclass
class ValPredictions:
    """The best model on the val split: file names in val order, labels, calibrated probabilities."""

    names: list[str]
    labels: torch.Tensor
    probs: torch.Tensor
    confusion: list[list[int]]


def wandb_mode(requested: str) -> tuple[str, str]:
    """(mode, why): 'auto' goes online only with credentials and a reachable server, else offline."""
    if requested != "auto":
        return requested, ""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"], ""
    has_key = bool(os.environ.get("WANDB_API_KEY")) or Path("~/.netrc").expanduser().is_file()
    if not has_key:
        return "offline", "no WANDB_API_KEY or ~/.netrc"
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host = url.netloc or url.path  # a self-hosted server often listens on another port (http://host:8080)
    try:
        port = url.port or (80 if url.scheme == "http" else 443)
        with socket.create_connection((url.hostname or host, port), timeout=5):
            return "online", ""
    except (OSError, ValueError) as err:  # ValueError: a port that is not a number
        return "offline", f"{host} unreachable ({getattr(err, 'strerror', None) or err})"


def mlflow_store(configured: str, run_dir: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment): tracking.mlflow_uri, else MLFLOW_TRACKING_URI (the
    store's own artifact location), else a SQLite store with its artifacts in RUN/tracking/: MLflow never reaches a
    server that the config or the environment does not name. Its usage telemetry (a request to
    mlflow-telemetry.io) is off unless MLFLOW_DISABLE_TELEMETRY says otherwise."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri, None
    tracking = run_dir.resolve() / "tracking"
    return f"sqlite:///{tracking / 'mlflow.db'}", (tracking / "mlflow-artifacts").as_uri()


class RunOutput:
    def __init__(self, accelerator, run_dir: Path, cfg: Config):
        self.accelerator = accelerator
        self.is_main = accelerator.is_main_process
        self.run_dir = run_dir
        self.cfg = cfg
        self.history: list[dict] = []
        self._log = None
        if self.is_main:
            (run_dir / "plots").mkdir(parents=True, exist_ok=True)
            self._log = (run_dir / "log.txt").open("a", buffering=1)
            atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
            self.history = self._read_history()

    # -- text ------------------------------------------------------------------------------------------
    def print(self, *lines: str) -> None:
        if not self.is_main:
            return
        for line in lines:
            print(line, flush=True)
            self._log.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def console(self, line: str) -> None:
        """A line for the console alone (progress where the output is not a terminal)."""
        if self.is_main:
            print(line, flush=True)

    def log_only(self, line: str) -> None:
        """A line for log.txt alone (e.g. the error the command line is about to print)."""
        if self.is_main and self._log:
            self._log.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def remove_stop_file(self) -> None:
        if self.is_main:
            (self.run_dir / "STOP").unlink(missing_ok=True)

    # -- trackers --------------------------------------------------------------------------------------
    def start_trackers(self) -> None:
        """Called on every process (Accelerate initialises trackers on the main one only)."""
        if not self.cfg.tracking.backends:
            return
        tracking_dir = self.run_dir / "tracking"
        init_kwargs = {}
        if "wandb" in self.cfg.tracking.backends:
            mode, why = wandb_mode(self.cfg.tracking.wandb_mode)
            if why:
                self.print(f"W&B: offline ({why}); sync later with `wandb sync {tracking_dir}/wandb/offline-run-*`")
            id_file = self.run_dir / "wandb_id.txt"
            if self.is_main and not id_file.exists():  # kept in the run folder: a resumed run continues it
                id_file.write_text(uuid.uuid4().hex[:12])
            self.accelerator.wait_for_everyone()
            init_kwargs["wandb"] = {"mode": mode, "dir": str(tracking_dir), "id": id_file.read_text().strip(),
                                    "resume": "allow", "name": self.cfg.tracking.run_name or self.run_dir.name,
                                    "entity": self.cfg.tracking.entity or None}
        if self.is_main:
            tracking_dir.mkdir(parents=True, exist_ok=True)
        if "mlflow" in self.cfg.tracking.backends:
            init_kwargs["mlflow"] = self._mlflow_start()
        self.accelerator.project_configuration.logging_dir = str(tracking_dir)  # TensorBoard writes here
        flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in to_flat_dict(self.cfg).items()}
        self.accelerator.init_trackers(self.cfg.tracking.project, init_kwargs=init_kwargs)
        for tracker in self.accelerator.trackers:  # the main process's
            tracker.store_init_configuration(self._mlflow_params(flat) if tracker.name == "mlflow" else flat)
        if self.is_main and "mlflow" in self.cfg.tracking.backends and not (self.run_dir / MLFLOW_ID).exists():
            run = self.accelerator.get_tracker("mlflow", unwrap=True)
            (self.run_dir / MLFLOW_ID).write_text(run.info.run_id)

    def _mlflow_params(self, flat: dict) -> dict:
        """MLflow keeps a run's params as first logged (a change is an error): a continued run adds new keys only."""
        import mlflow

        run = self.accelerator.get_tracker("mlflow", unwrap=True)
        logged = mlflow.get_run(run.info.run_id).data.params
        return {k: v for k, v in flat.items() if k not in logged}

    def _mlflow_start(self) -> dict:
        """The MLflowTracker's arguments: the store (main process), the run to continue when resumed."""
        uri, artifacts = mlflow_store(self.cfg.tracking.mlflow_uri, self.run_dir)
        if self.is_main:
            import mlflow

            mlflow.set_tracking_uri(uri)
            self.print(f"MLflow: {uri}")
        id_file = self.run_dir / MLFLOW_ID
        return {"run_id": id_file.read_text().strip() if id_file.is_file() else None, "logging_dir": artifacts,
                "run_name": self.cfg.tracking.run_name or self.run_dir.name}

    def log(self, values: dict, step: int) -> None:
        if self.cfg.tracking.backends:
            self.accelerator.log(values, step=step)

    def summary(self, values: dict) -> None:
        if self.is_main and "wandb" in self.cfg.tracking.backends:
            run = self.accelerator.get_tracker("wandb", unwrap=True)
            for key, value in values.items():
                run.summary[key] = value

    def finish(self) -> None:
        if self.cfg.tracking.backends:
            self.accelerator.end_training()
        if self._log:
            self._log.close()
            self._log = None

    # -- metrics and plots -----------------------------------------------------------------------------
    def _read_history(self) -> list[dict]:
        file = self.run_dir / "metrics.jsonl"
        if not file.is_file():
            return []
        rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        return [r for r in rows if r.get("kind") == "epoch"]

    def record(self, row: dict) -> None:
        """Append one metrics row (epoch or step) to metrics.jsonl."""
        if not self.is_main:
            return
        with (self.run_dir / "metrics.jsonl").open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        if row.get("kind") == "epoch":
            # A resumed run re-does an interrupted epoch: the newer row replaces the older one.
            self.history = [h for h in self.history if h["epoch"] != row["epoch"]] + [row]

    def epoch_plots(self, epoch: int, confusion: list[list[int]], classes: list[str], top1: float,
                    step: int) -> Path | None:
        if not self.is_main:
            return None
        evaluated = [h for h in self.history if "val_loss" in h]
        plots.metrics_plot_png(evaluated, self.run_dir / "plots" / "metrics_plot.png",
                               top_k_key=f"val_top{min(self.cfg.eval.top_k, len(classes))}")
        if epoch % self.cfg.eval.confusion_every_epochs:
            return None
        path = plots.confusion_matrix_png(confusion, classes,
                                          self.run_dir / "plots" / f"confusion_matrix_epoch_{epoch}.png",
                                          f"epoch {epoch}: val top-1 {100 * top1:.1f}%")
        self._log_image("confusion_matrix", path, step)
        return path

    def _log_image(self, key: str, path: Path, step: int | None, wandb_step: int | None = -1) -> None:
        """A PNG to every tracker that takes images (wandb_step -1: the same step as the others)."""
        if not self.cfg.tracking.backends:
            return
        import numpy as np
        from PIL import Image

        image = np.asarray(Image.open(path).convert("RGB"))
        for name in self.cfg.tracking.backends:
            tracker = self.accelerator.get_tracker(name)
            if name == "wandb":
                tracker.log_images({key: [image]}, step=step if wandb_step == -1 else wandb_step)
            elif name == "tensorboard":
                tracker.log_images({key: image[None]}, step=step, dataformats="NHWC")
            elif name == "mlflow":  # Accelerate's MLflowTracker takes no images: the PNG file as an artifact
                tracker.log_artifact(str(path), artifact_path="plots")
            # the other trackers: the PNG stays in RUN/plots/ (their image calls differ and are untested here)

    # -- end of run ------------------------------------------------------------------------------------
    def end_of_run(self, summary: dict, best_dir: Path, classes: list[str], val: ValPredictions,
                   step: int) -> Path | None:
        """The best model's review, once per (W&B run id, best checkpoint): the confusion matrix PNG always; with
        trackers, the final metrics (W&B summary, TensorBoard hparams), the matrix image, and on W&B the model
        Artifact and the table of val errors. Main process only; returns the matrix's path."""
        if not self.is_main:
            return None
        title = f"best (epoch {summary['best_epoch']}): val top-1 {100 * summary['val_top1']:.1f}%"
        matrix = plots.confusion_matrix_png(val.confusion, classes,
                                            self.run_dir / "plots" / "confusion_matrix_best.png", title)
        backends = self.cfg.tracking.backends
        if not backends:
            return matrix
        # best/val_top1, ..., best/temperature, best/epoch
        finals = {f"best/{k.removeprefix('best_')}": float(summary[k]) for k in FINAL_METRICS}
        marker = self.run_dir / "tracking" / MARKER
        key = {"best_epoch": summary["best_epoch"], "step": step, "wandb_id": self._wandb_id(),
               "mlflow_id": self._mlflow_id()}
        done = json.loads(marker.read_text()) if marker.is_file() else {}
        self.summary(finals)  # the W&B run summary holds the final numbers, also when resumed
        if {k: done.get(k) for k in key} == key:
            self.print(f"trackers: the end-of-run review of this best checkpoint was logged before ({marker})")
            return matrix
        try:
            self._log_image("best/confusion_matrix", matrix, step, wandb_step=None)
            if "tensorboard" in backends:
                self._tensorboard_review(finals, classes, val)
            if "wandb" in backends:
                self._wandb_review(best_dir, classes, val, summary)
            if "mlflow" in backends:
                self._mlflow_review(finals, best_dir, classes, val, summary, step)
        except Exception as err:  # noqa: BLE001 - a tracker failing must not fail a run whose checkpoints are saved
            self.print(f"trackers: the end-of-run review was not logged ({type(err).__name__}: {err}); "
                       f"the run itself is complete")
            return matrix
        atomic_write_json(marker, dict(key, backends=list(backends)))
        return matrix

    def _wandb_id(self) -> str | None:
        id_file = self.run_dir / "wandb_id.txt"
        return id_file.read_text().strip() if "wandb" in self.cfg.tracking.backends and id_file.is_file() else None

    def _mlflow_id(self) -> str | None:
        id_file = self.run_dir / MLFLOW_ID
        return id_file.read_text().strip() if "mlflow" in self.cfg.tracking.backends and id_file.is_file() else None

    def _tensorboard_review(self, finals: dict, classes: list[str], val: ValPredictions) -> None:
        """The config as hparams with the final metrics (HParams dashboard), as a session named `final`; the val
        errors as a text table."""
        writer = self.accelerator.get_tracker("tensorboard", unwrap=True)
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                   for k, v in to_flat_dict(self.cfg).items()}
        writer.add_hparams(hparams, finals, run_name="final")
        columns, rows = error_rows(classes, val)
        table = [columns, ["---"] * len(columns), *rows[:MAX_ERROR_ROWS]]
        writer.add_text("val/errors", "\n".join("| " + " | ".join(map(str, row)) + " |" for row in table))
        writer.flush()

    def _mlflow_review(self, finals: dict, best_dir: Path, classes: list[str], val: ValPredictions, summary: dict,
                       step: int) -> None:
        """The final metrics, the best checkpoint (model.pt + meta.json under model/, its metadata as tags) and
        the val errors (val_errors.json) on the MLflow run."""
        import mlflow

        tracker = self.accelerator.get_tracker("mlflow")
        tracker.log(finals, step=step)
        for name in (checkpoint.MODEL_FILE, checkpoint.META_FILE):
            tracker.log_artifact(str(best_dir / name), artifact_path="model")
        columns, rows = error_rows(classes, val)
        mlflow.log_dict({"columns": columns, "rows": rows[:MAX_ERROR_ROWS], "wrong": len(rows),
                         "val": len(val.labels)}, "val_errors.json")
        mlflow.set_tags({"checkbox_dist.classes": ",".join(classes), "checkbox_dist.model_name": self.cfg.model.name,
                         "checkbox_dist.config_hash": recipe_hash(self.cfg),
                         "checkbox_dist.checkpoint_sha256": _model_sha256(best_dir) or "",
                         "checkbox_dist.best_epoch": summary["best_epoch"]})
        self.print(f"MLflow: logged the best checkpoint (artifacts model/) and val_errors.json ({len(rows)} wrong of "
                   f"{len(val.labels)})")

    def _wandb_review(self, best_dir: Path, classes: list[str], val: ValPredictions, summary: dict) -> None:
        import wandb

        run = self.accelerator.get_tracker("wandb", unwrap=True)
        if getattr(run, "disabled", False):
            return
        meta = {"classes": list(classes), "model_name": self.cfg.model.name, "config_hash": recipe_hash(self.cfg),
                "metrics": {k: summary[k] for k in FINAL_METRICS}, "checkpoint_sha256": _model_sha256(best_dir),
                "preprocess": PreprocessSpec.from_data_config(self.cfg.data).to_dict(),
                "best_epoch": summary["best_epoch"], "run_dir": str(self.run_dir)}
        artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=meta,
                                  description=f"best checkpoint of {self.run_dir.name} (epoch {summary['best_epoch']})")
        for name in (checkpoint.MODEL_FILE, checkpoint.META_FILE):
            artifact.add_file(str(best_dir / name), name=name)
        run.log_artifact(artifact, aliases=["best", "latest"])
        columns, rows = error_rows(classes, val)
        if len(rows) > MAX_ERROR_ROWS:
            self.print(f"W&B: val/errors holds the first {MAX_ERROR_ROWS} of {len(rows)} wrong val predictions")
        data = [[wandb.Image(row[0]) if Path(row[0]).is_file() else None, *row] for row in rows[:MAX_ERROR_ROWS]]
        self.accelerator.get_tracker("wandb").log_table("val/errors", columns=["image", *columns], data=data)
        self.print(f"W&B: logged artifact model-{run.id} (aliases best, latest) and val/errors ({len(rows)} wrong "
                   f"of {len(val.labels)})")


def error_rows(classes: list[str], val: ValPredictions) -> tuple[list[str], list[list]]:
    """(columns, rows) of the val images the model gets wrong, most confident mistakes first: file, given label,
    predicted label, its confidence, then the calibrated probability of every class."""
    predicted = val.probs.argmax(1)
    wrong = [i for i in range(len(val.labels)) if int(predicted[i]) != int(val.labels[i])]
    wrong.sort(key=lambda i: -float(val.probs[i, predicted[i]]))
    rows = [[val.names[i], classes[int(val.labels[i])], classes[int(predicted[i])],
             round(float(val.probs[i, predicted[i]]), 6), *[round(float(p), 6) for p in val.probs[i]]] for i in wrong]
    return ["file", "given", "predicted", "confidence", *[f"p_{c}" for c in classes]], rows


def _model_sha256(folder: Path) -> str | None:
    meta = folder / checkpoint.META_FILE
    return json.loads(meta.read_text()).get("files", {}).get(checkpoint.MODEL_FILE) if meta.is_file() else None
