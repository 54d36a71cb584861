"""How a job's MLflow run ends when the job raises: KILLED when stopped from outside, FAILED on an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_config
from lightning.pytorch.utilities.exceptions import SIGTERMException
from mlflow.tracking import MlflowClient
from test_cli import TINY

from ragforget.pipeline import Job, run_job
from ragforget.tracking.status import terminal_status


def lightning_ctrl_c() -> SystemExit:
    """What Lightning's trainer raises on Ctrl-C during fit: sys.exit(1) inside its KeyboardInterrupt handler."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemExit(1)  # noqa: B904 - the implicit __context__ is what Lightning leaves
    except SystemExit as exc:
        return exc


def test_terminal_status_tells_a_stop_from_outside_from_an_error() -> None:
    assert terminal_status(KeyboardInterrupt()) == "KILLED"
    assert terminal_status(SIGTERMException()) == "KILLED"
    assert terminal_status(lightning_ctrl_c()) == "KILLED"
    wrapped = RuntimeError("teardown failed")
    wrapped.__cause__ = KeyboardInterrupt()
    assert terminal_status(wrapped) == "KILLED"
    assert terminal_status(ValueError("Invalid learning rate")) == "FAILED"
    assert terminal_status(SystemExit(1)) == "FAILED"  # a plain exit is not a signal


@pytest.mark.parametrize(("raised", "status"), [(KeyboardInterrupt(), "KILLED"), (lightning_ctrl_c(), "KILLED"),
                                                (RuntimeError("boom"), "FAILED")])
def test_a_job_stopped_with_ctrl_c_ends_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                raised: BaseException, status: str) -> None:
    def interrupted(self: Job, tracked: object) -> dict[str, float]:
        raise raised

    monkeypatch.setattr(Job, "run", interrupted)
    cfg = compose_config([*TINY, f"paths.output_dir={tmp_path}"])
    with pytest.raises(type(raised)):
        run_job(cfg, tmp_path / "job")
    client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.logger.experiment_name).experiment_id])
    assert run.info.status == status
    assert run.data.tags["error"].startswith(type(raised).__name__)
