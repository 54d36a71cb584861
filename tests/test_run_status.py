"""How a job's MLflow run ends when the job raises: KILLED when stopped from outside, FAILED on an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY, compose_config
from lightning.pytorch.utilities.exceptions import SIGTERMException
from mlflow.tracking import MlflowClient

from ragforget import pipeline, validation
from ragforget.pipeline import run_job
from ragforget.tracking.mlflow_run import TrackedRun
from ragforget.tracking.status import terminal_status, tracked_run


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
    def interrupted(*args: object) -> dict[str, float]:
        raise raised

    monkeypatch.setitem(pipeline.STAGES, "all", interrupted)
    cfg = compose_config([*TINY, f"paths.output_dir={tmp_path}"])
    with pytest.raises(type(raised)):
        run_job(cfg, tmp_path / "job")
    client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.logger.experiment_name).experiment_id])
    assert run.info.status == status
    assert run.data.tags["error"].startswith(type(raised).__name__)


@pytest.mark.parametrize(("raised", "status"), [(None, "FINISHED"), (KeyboardInterrupt(), "KILLED"),
                                                (lightning_ctrl_c(), "KILLED"), (RuntimeError("boom"), "FAILED")])
def test_tracked_run_ends_the_run_with_its_block(tmp_path: Path, raised: BaseException | None, status: str) -> None:
    """The one place runs end (job, post-hoc variant and report runs): RUNNING inside, never after."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)

    def block() -> None:
        with tracked_run(TrackedRun(uri, "status", str(tmp_path / "artifacts")), "run", {"stage": "all"}) as run:
            assert client.get_run(str(run.run_id)).info.status == "RUNNING"
            if raised is not None:
                raise raised

    if raised is None:
        block()
    else:
        with pytest.raises(type(raised)):
            block()
    (run,) = client.search_runs([client.get_experiment_by_name("status").experiment_id])
    assert run.info.status == status and run.data.tags["stage"] == "all"
    assert run.data.tags.get("error", "").startswith(type(raised).__name__ if raised else "")
    assert ("error" in run.data.tags) == (raised is not None)


def test_every_stage_a_config_may_name_maps_to_a_function() -> None:
    """stage=report opens no job run (run_job hands it to the report); every other stage is in STAGES."""
    assert set(pipeline.STAGES) | {"report"} == set(validation.STAGES)
    assert all(callable(stage) for stage in pipeline.STAGES.values())
