"""Experiment tracking: metrics.jsonl (always), TensorBoard and MLflow (configurable), and a
loss-curve PNG. MLflow defaults to a SQLite store inside the workspace: nothing leaves the
machine unless ``tracking.mlflow_uri`` points at a server."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tunesmith.config import TrackingConfig
from tunesmith.deps import MLFLOW, TENSORBOARD, require


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


class Tracker:
    """Receives the trainer's events; one per training run (resumes reopen the same run)."""

    def __init__(self, cfg: TrackingConfig, *, run_dir: Path, workspace: Path, experiment: str,
                 run_name: str, params: dict[str, Any], enabled: bool = True):
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = run_dir / "metrics.jsonl"
        self.enabled = enabled  # only the main process of a distributed run writes
        self.tb = self.mlflow = None
        self.mlflow_run_id: str | None = None
        if not enabled:
            return
        require(*([TENSORBOARD] if cfg.tensorboard else []), *([MLFLOW] if cfg.mlflow else []))
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if cfg.mlflow:
            self._start_mlflow(cfg, workspace, experiment, run_name, params)

    def _start_mlflow(self, cfg: TrackingConfig, workspace: Path, experiment: str, run_name: str,
                      params: dict[str, Any]) -> None:
        import mlflow

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        mlflow.set_tracking_uri(cfg.mlflow_uri or f"sqlite:///{(workspace / 'mlflow.db').resolve()}")
        if not cfg.mlflow_uri and mlflow.get_experiment_by_name(experiment) is None:
            # with a SQLite store MLflow would put artifacts in ./mlruns of whatever folder
            # the command runs in; keep them in the workspace
            mlflow.create_experiment(experiment, artifact_location=(workspace / "mlflow-artifacts").resolve().as_uri())
        mlflow.set_experiment(experiment)
        state = self.run_dir / "mlflow_run_id"
        previous = state.read_text().strip() if state.exists() else None
        run = mlflow.start_run(run_id=previous) if previous else mlflow.start_run(run_name=run_name)
        self.mlflow, self.mlflow_run_id = mlflow, run.info.run_id
        state.write_text(run.info.run_id)
        if not previous:
            flat = {k: str(v)[:500] for k, v in _flatten(params).items()}
            for i in range(0, len(flat), 90):  # MLflow caps params per call
                mlflow.log_params(dict(list(flat.items())[i : i + 90]))

    def log(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(event) + "\n")
        kind, step = event.get("event"), event.get("step", 0)
        numbers = {k: float(v) for k, v in event.items()
                   if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("step", "total_steps")}
        prefix = "val/" if kind == "eval" else "train/"
        if kind in ("step", "eval"):
            if self.tb is not None:
                for k, v in numbers.items():
                    self.tb.add_scalar(prefix + k.removeprefix("val_"), v, step)
            if self.mlflow is not None:
                self.mlflow.log_metrics({prefix.rstrip("/") + "_" + k.removeprefix("val_"): v
                                         for k, v in numbers.items()}, step=step)

    def log_artifacts(self, folder: Path, path: str) -> None:
        if self.mlflow is not None:
            self.mlflow.log_artifacts(str(folder), artifact_path=path)

    def close(self, status: str = "FINISHED") -> None:
        if self.tb is not None:
            self.tb.close()
        if self.mlflow is not None:
            self.mlflow.end_run(status=status)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss_curve(metrics: list[dict[str, Any]], out: Path) -> Path:
    """Train loss per step (and a moving average) with validation loss on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [(m["step"], m["loss"]) for m in metrics if m.get("event") == "step"]
    evals = [(m["step"], m["val_loss"]) for m in metrics if m.get("event") == "eval"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    if steps:
        xs, ys = zip(*steps, strict=True)
        ax.plot(xs, ys, alpha=0.35, label="train loss")
        k = max(1, len(ys) // 20)
        smooth = [sum(ys[max(0, i - k + 1) : i + 1]) / len(ys[max(0, i - k + 1) : i + 1]) for i in range(len(ys))]
        ax.plot(xs, smooth, label=f"train (avg of {k})")
    if evals:
        xs, ys = zip(*evals, strict=True)
        ax.plot(xs, ys, "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (per trained token)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
