"""Sweeps as a user runs them: grid multirun with a failing job, joblib in parallel, Optuna; MLflow grouping."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hydra.types import RunMode
from test_cli import TINY, run_cli, runs_in
from test_report import report_cfg

from ragforget.errors import ConfigError
from ragforget.report.stage import run_report
from ragforget.tracking.sweep import objective_value, sweep_tags


def hydra_cfg(mode: RunMode, sweep_dir: str = "outputs/multirun/x") -> SimpleNamespace:
    return SimpleNamespace(mode=mode, sweep=SimpleNamespace(dir=sweep_dir),
                           job=SimpleNamespace(num=3, override_dirname="seed=1"))


def test_sweep_tags_only_in_multirun(tmp_path: Path) -> None:
    assert sweep_tags(hydra_cfg(RunMode.RUN)) == {}
    tags = sweep_tags(hydra_cfg(RunMode.MULTIRUN, str(tmp_path / "a")))
    assert tags["sweep_dir"] == str(tmp_path / "a") and tags["sweep_job"] == "3"
    assert tags["sweep_overrides"] == "seed=1" and len(tags["sweep_id"]) == 12
    assert sweep_tags(hydra_cfg(RunMode.MULTIRUN, str(tmp_path / "b")))["sweep_id"] != tags["sweep_id"]


def test_objective_is_a_weighted_sum_of_metrics() -> None:
    metrics = {"odqa/acc": 0.2, "retention/macro_avg": 0.4}
    both = {"metrics": ["odqa/acc", "retention/macro_avg"], "weights": [1.0, 0.5]}
    assert objective_value(metrics, both, "all") == pytest.approx(0.2 + 0.5 * 0.4)
    # stages that evaluate nothing have no objective (self_synth's stage=synthesize has other metrics)
    assert objective_value({"self_synth/rows": 3.0}, both, "synthesize") is None
    assert objective_value({}, both, "prepare") is None
    # a DDP worker returns no metrics; raising there would exit it non-zero and Lightning would kill rank 0
    assert objective_value({}, both, "all") is None
    with pytest.raises(ConfigError, match="objective.metrics"):
        objective_value(metrics, {"metrics": ["odqa/em"], "weights": [1.0]}, "evaluate")
    with pytest.raises(ConfigError, match="objective.weights"):
        objective_value(metrics, {"metrics": ["odqa/acc"], "weights": [1.0, 2.0]}, "all")


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep_and_the_report_lists_it(tmp_path: Path) -> None:
    # A negative learning rate fails inside training, after the job's MLflow run has started.
    result = run_cli("--multirun", "train.lr=-1.0,1e-3", f"paths.output_dir={tmp_path}", *TINY, check=False)
    assert result.returncode != 0  # Hydra reports the failure once every job has run
    runs = {r.data.params["train.lr"]: r for r in runs_in(tmp_path)}
    assert runs["-1.0"].info.status == "FAILED" and "Invalid learning rate" in runs["-1.0"].data.tags["error"]
    assert runs["0.001"].info.status == "FINISHED" and "odqa/acc" in runs["0.001"].data.metrics
    assert runs["-1.0"].data.tags["sweep_id"] == runs["0.001"].data.tags["sweep_id"]

    spec = {"name": "lr", "experiment": "ragforget", "seeds": [0],
              "columns": [{"label": "bad lr", "params": {"train.lr": "-1.0"}},
                          {"label": "good lr", "params": {"train.lr": "0.001"}}],
              "rows": [{"metric": "odqa/acc"}]}
    report = run_report(report_cfg(tmp_path, f"sqlite:///{tmp_path}/mlflow.db", spec))
    md = (report.out_dir / "table.md").read_text()
    assert "FAILED bad lr, seed 0" in md and "Invalid learning rate" in md
    assert report.selection.used["good lr"][0].run_id == runs["0.001"].info.run_id


@pytest.mark.slow
def test_joblib_launcher_runs_two_jobs_in_parallel_processes(tmp_path: Path) -> None:
    result = run_cli("--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1",
                     f"paths.output_dir={tmp_path}", *TINY)
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    runs = runs_in(tmp_path)
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" and "odqa/acc" in r.data.metrics for r in runs)
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    assert len(list((tmp_path / "multirun").glob("*/*-sft-tiny_random-squad_open-s*/checkpoint"))) == 2


@pytest.mark.slow
def test_optuna_sweep_of_two_trials_on_the_tiny_model(tmp_path: Path) -> None:
    run_cli("hparams_search=selfaug_optuna", "hydra.sweeper.n_trials=2", f"paths.output_dir={tmp_path}", *TINY)
    runs = runs_in(tmp_path, "selfaug_optuna")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    alphas = {float(r.data.params["method.selfaug.alpha"]) for r in runs}
    assert len(alphas) == 2 and all(0.05 <= a <= 1.0 for a in alphas)
    (results,) = (tmp_path / "multirun").glob("*/optimization_results.yaml")
    best = yaml.safe_load(results.read_text())
    objectives = [r.data.metrics["odqa/acc"] + r.data.metrics["retention/macro_avg"] for r in runs]
    assert best["best_value"] == pytest.approx(max(objectives))
    assert set(best["best_params"]) == {"method.selfaug.alpha", "train.lr"}

