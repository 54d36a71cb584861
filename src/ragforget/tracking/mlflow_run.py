"""A thin wrapper over MlflowClient that owns one run (explicit ids, no global fluent state).

Explicit run ids let an interrupted job resume into the same run and keep concurrent jobs of a
sweep from writing into each other's runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ragforget.utils.logging import get_logger

log = get_logger(__name__)

MAX_PARAM_LENGTH = 6000  # MLflow's limit for one param value


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class TrackedRun:
    """Create or resume one MLflow run and log into it."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_location: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            self.experiment_id = self.client.create_experiment(experiment_name, artifact_location=artifact_location)
        else:
            self.experiment_id = experiment.experiment_id
        self.run_id: str | None = None
        self._logged: dict[str, float] = {}

    def start(self, run_name: str, tags: Mapping[str, str], run_id: str | None = None) -> str:
        """Start a new run, or reopen ``run_id`` (resume) and mark it running again.

        A new run also gets MLflow's standard source tags, as ``mlflow.start_run`` would give it:
        mlflow.user, mlflow.source.name and .type, and mlflow.source.git.commit (with the branch and the
        repository URL, credentials stripped) when the entry point lies in a git checkout.
        """
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            # What the interrupted job logged: a resumed job repeats work, not history entries.
            self._logged = dict(self.client.get_run(run_id).data.metrics)
            log.info("resuming MLflow run %s", run_id)
        else:
            from mlflow.tracking.context.registry import resolve_tags

            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=resolve_tags(dict(tags)))
            self.run_id = run.info.run_id
            log.info("MLflow run %s (%s) at %s", run_name, self.run_id, self.tracking_uri)
        return self.run_id

    @property
    def _id(self) -> str:
        if self.run_id is None:
            raise RuntimeError("TrackedRun.start() must be called before logging")
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params; values already logged (on resume) are skipped, since MLflow forbids changing them."""
        from mlflow.entities import Param

        existing = self.client.get_run(self._id).data.params
        batch = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items() if k not in existing]
        for start in range(0, len(batch), 100):
            self.client.log_batch(self._id, params=batch[start:start + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self._id, key, str(value))

    def last_step(self, key: str) -> int:
        """The highest step at which ``key`` was logged in this run (-1 if never): where curves resume."""
        return max((m.step for m in self.client.get_metric_history(self._id, key)), default=-1)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log finite numeric metrics (NaN/inf are skipped with a warning rather than failing the run).

        A step-0 value equal to the one logged last (by this job, or by the interrupted job a resumed run
        continues) is not logged again, so the history of a resumed run equals an uninterrupted one's.
        """
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = []
        for key, value in metrics.items():
            value = float(value)
            if not math.isfinite(value):
                log.warning("metric %s is %s; not logged", key, value)
                continue
            if not step:
                if self._logged.get(key) == value:
                    continue
                self._logged[key] = value
            batch.append(Metric(key, value, now, step or 0))
        for start in range(0, len(batch), 500):
            self.client.log_batch(self._id, metrics=batch[start:start + 500])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self._id, str(path), artifact_path)
        elif path.exists():
            self.client.log_artifact(self._id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED", error: str | None = None) -> None:
        if error:
            self.client.set_tag(self._id, "error", error[:5000])
        self.client.set_terminated(self._id, status=status)
