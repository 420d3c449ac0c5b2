"""Run tracking with MLflow: a local file store (./mlruns) unless MLFLOW_TRACKING_URI is set."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import OptimizerError

log = logging.getLogger(__name__)


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


class Tracker:
    """One MLflow run per recipe execution; metrics named <point>.<metric>, step = seed."""

    def __init__(self, experiment: str, params: dict, enabled: bool, root: Path = Path(".")):
        self.mlflow = None
        if not enabled:
            return
        import mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (root / "mlruns").resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps the file store in maintenance mode behind this opt-in; a database
            # backend needs SQLAlchemy, which the optimizer image does not carry.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        try:
            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment(experiment)
            self.run = mlflow.start_run()
        except Exception as exc:  # MlflowException and store errors: one line for the CLI
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OptimizerError(f"MLflow tracking at {uri} failed: {first} "
                                 f"(set mlflow: false in the recipe to run without it)") from None
        self.mlflow = mlflow
        flat = _flatten(params)
        for i in range(0, len(flat), 100):  # MLflow takes at most 100 params per call
            mlflow.log_params({k: str(v)[:500] for k, v in list(flat.items())[i:i + 100]})

    @property
    def uri(self) -> str | None:
        return self.mlflow.get_tracking_uri() if self.mlflow else None

    def log_metrics(self, point: str, seed: int, metrics: dict) -> None:
        if self.mlflow:
            numbers = {f"{point}.{k}": float(v) for k, v in _flatten(metrics).items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.mlflow.log_metrics(numbers, step=seed)

    def finish(self, artifacts: Path | None, failed: bool) -> None:
        if self.mlflow:
            if artifacts is not None:
                self.mlflow.log_artifacts(str(artifacts))
            self.mlflow.end_run(status="FAILED" if failed else "FINISHED")
