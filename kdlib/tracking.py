"""Optional MLflow tracking, for teams that compare runs in MLflow's UI: `tracking: mlflow` in a study file.

After each run finishes, the runner logs it as one MLflow run in an experiment named after the study: the run's
parameters (params.json), its metrics (metrics.json: scores, timings, sizes; the per-epoch history as steps), and
the executed notebook and metrics.json as artifacts. The run folders stay the record (analysis reads files only);
MLflow gets a copy. The tracking URI is $MLFLOW_TRACKING_URI (a team's server: http://host:5000), else a local
store in `<output_dir>/mlruns/`: MLflow's SQLite backend (mlflow.db; MLflow 3 refuses new file stores) with the
artifacts beside it. `mlflow ui --backend-store-uri sqlite:///<output_dir>/mlruns/mlflow.db` shows it.
Logging goes through an `MlflowClient`, never MLflow's global active run, and a logging error is reported, not
raised: a study never fails because its tracker did.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdlib import rundir
from kdlib.errors import ConfigError

if TYPE_CHECKING:
    from kdlib.runner import Run

log = logging.getLogger(__name__)

MAX_PARAM = 6000  # MLflow's limit on a parameter value's length


def flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """("a.b", value) pairs of a nested dict; lists stay whole."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from flatten(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), obj


def run_metrics(metrics: dict) -> tuple[dict[str, float], list[tuple[str, float, int]]]:
    """Numbers of a metrics.json: ({name: value}, [(name, value, epoch) for the history])."""
    flat = {k: float(v) for k, v in flatten({k: v for k, v in metrics.items() if k not in ("history", "params",
                                                                                            "environment")})
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    steps = [(k, float(v), int(row.get("epoch", i + 1))) for i, row in enumerate(metrics.get("history", []))
             for k, v in row.items() if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return flat, steps


def mlflow_logger(study: str, store: Path, echo=print) -> Callable[[Run], None]:
    """A function that logs one finished run to MLflow (experiment `study`); `store`: the local default's folder."""
    try:
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param
    except ImportError:
        raise ConfigError("tracking: mlflow needs MLflow's client and its SQLite store: "
                          "pip install mlflow-skinny sqlalchemy alembic") from None
    store = store.resolve()
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        store.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(study)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        study, artifact_location=None if os.environ.get("MLFLOW_TRACKING_URI") else (store / "artifacts").as_uri())
    echo(f"tracking: MLflow experiment {study!r} at {uri}")

    def log_run(run: Run) -> None:
        try:
            started = int(time.time() * 1000)
            metrics = rundir.read_json(run.out_dir / rundir.METRICS) if (run.out_dir / rundir.METRICS).exists() else {}
            params = rundir.read_json(run.out_dir / rundir.PARAMS)["parameters"]
            mlrun = client.create_run(experiment_id, run_name=run.name, tags={
                "stage": run.stage, "dataset": run.dataset, "variant": run.variant, "out_dir": str(run.out_dir)})
            run_id = mlrun.info.run_id
            flat, steps = run_metrics(metrics)
            client.log_batch(run_id, params=[Param(k, str(v)[:MAX_PARAM]) for k, v in flatten(params)],
                             metrics=[Metric(k, v, started, 0) for k, v in flat.items()]
                             + [Metric(f"epoch.{k}", v, started, step) for k, v, step in steps])
            for artifact in (run.out_dir / run.notebook.name, run.out_dir / rundir.METRICS):
                if artifact.exists():
                    client.log_artifact(run_id, str(artifact))
            client.set_terminated(run_id)
        except Exception as e:  # the run folder is the record; a tracker failure must not stop the study
            echo(f"  tracking: could not log {run.name} to MLflow ({type(e).__name__}: {e})")

    return log_run
