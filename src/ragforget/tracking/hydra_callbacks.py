"""Hydra callbacks: work a sweep must do once, before its jobs start and after they end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ragforget.tracking.mlflow_run import TrackedRun
from ragforget.tracking.sweep import sweep_id
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


class PrepareMlflowStore(Callback):
    """Create the MLflow store and experiment before parallel jobs (joblib, submitit) start.

    Two jobs that find no sqlite store both try to create its tables, and one fails ("table ... already
    exists"); created once here, every job finds it ready.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        logger = config.logger
        if str(logger.tracking_uri).startswith("sqlite:///"):
            Path(str(logger.tracking_uri).removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        TrackedRun(logger.tracking_uri, logger.experiment_name, str(Path(logger.artifact_location).resolve()))


class SweepReportCommand(Callback):
    """When a sweep ends, say how to compare its runs: its id selects them for the any-sweep report."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        log.info("compare this sweep's runs: python run.py stage=report report=sweep report.sweep_id=%s "
                 "logger.experiment_name=%s", sweep_id(config.hydra.sweep.dir), config.logger.experiment_name)
