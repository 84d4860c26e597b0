"""RunOutput: every side effect of a training run -- prints, log.txt, metrics.jsonl, plots, trackers --
goes through this one object, which acts on the main process only. The loop never checks ranks itself.

Run folder (train.output_dir):
    config.yaml              the resolved config of this run
    log.txt                  everything printed
    metrics.jsonl            one JSON line per epoch (and per log interval: "kind": "step")
    plots/metrics_plot.png   train/val loss and accuracy curves
    plots/confusion_matrix_epoch_<N>.png
    plots/confusion_matrix_best.png     the best checkpoint's, written at the end of the run
    checkpoints/{last,best,epoch_<N>}/
    tracking/                W&B (offline) and TensorBoard files
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

from checkbox_dist.core import plots
from checkbox_dist.core.config import Config, dump_yaml, to_flat_dict
from checkbox_dist.core.files import atomic_write_text


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
        self.accelerator.project_configuration.logging_dir = str(tracking_dir)  # TensorBoard writes here
        flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in to_flat_dict(self.cfg).items()}
        self.accelerator.init_trackers(self.cfg.tracking.project, config=flat, init_kwargs=init_kwargs)

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

    def best_confusion_plot(self, confusion: list[list[int]], classes: list[str], epoch: int, top1: float) -> Path:
        """plots/confusion_matrix_best.png: the best checkpoint's val confusion matrix (main process)."""
        return plots.confusion_matrix_png(confusion, classes, self.run_dir / "plots" / "confusion_matrix_best.png",
                                          f"best (epoch {epoch}): val top-1 {100 * top1:.1f}%")

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
        if self.cfg.tracking.backends:
            import numpy as np
            from PIL import Image

            image = np.asarray(Image.open(path).convert("RGB"))
            for name in self.cfg.tracking.backends:
                kwargs = {"dataformats": "NHWC"} if name == "tensorboard" else {}
                tracker = self.accelerator.get_tracker(name)
                tracker.log_images({"confusion_matrix": [image] if name == "wandb" else image[None]}, step=step,
                                   **kwargs)
        return path
