"""Sweeps as a user runs them: grid multirun with a failing job, joblib in parallel, Optuna; MLflow grouping."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import ROOT, TINY, run_cli, runs_in
from hydra.types import RunMode
from test_report import report_cfg

from ragforget.errors import ConfigError
from ragforget.report.stage import run_report
from ragforget.tracking.sweep import ObjectiveError, in_sweep, objective_value, sweep_tags


def hydra_cfg(mode: RunMode, sweep_dir: str = "outputs/multirun/x") -> SimpleNamespace:
    return SimpleNamespace(mode=mode, sweep=SimpleNamespace(dir=sweep_dir),
                           job=SimpleNamespace(num=3, override_dirname="seed=1"))


def test_sweep_tags_only_in_multirun(tmp_path: Path) -> None:
    assert not in_sweep(hydra_cfg(RunMode.RUN)) and in_sweep(hydra_cfg(RunMode.MULTIRUN))
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


def test_a_nan_or_infinite_objective_is_an_error_naming_its_metrics() -> None:
    """Returned, NaN would crash an Optuna sweep and None would leave the MLflow run FINISHED; raised, the
    job fails and the sweeper records the trial as FAIL."""
    both = {"metrics": ["odqa/acc", "retention/macro_avg"], "weights": [1.0, 1.0]}
    with pytest.raises(ObjectiveError,
                       match=r"objective is nan .*retention/macro_avg \(nan\).*\['retention/macro_avg'\]"):
        objective_value({"odqa/acc": 0.2, "retention/macro_avg": math.nan}, both, "all")
    with pytest.raises(ObjectiveError, match=r"objective is inf .*\['odqa/acc'\]"):
        objective_value({"odqa/acc": math.inf, "retention/macro_avg": 0.4}, both, "evaluate")
    # a NaN weight (objective.weights.0=nan) makes its term NaN: the message names that metric
    with pytest.raises(ObjectiveError, match=r"nan x odqa/acc \(0\.2\).*\['odqa/acc'\]"):
        objective_value({"odqa/acc": 0.2, "retention/macro_avg": 0.4},
                        {"metrics": ["odqa/acc", "retention/macro_avg"], "weights": [math.nan, 1.0]}, "all")
    # inf - inf: each term is infinite, the sum NaN; both are named
    with pytest.raises(ObjectiveError, match=r"objective is nan .*\['odqa/acc', 'retention/macro_avg'\]"):
        objective_value({"odqa/acc": math.inf, "retention/macro_avg": math.inf},
                        {"metrics": ["odqa/acc", "retention/macro_avg"], "weights": [1.0, -1.0]}, "all")
    # stages without an objective stay None whatever their metrics
    assert objective_value({"odqa/acc": math.nan}, both, "synthesize") is None


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep_and_the_report_lists_it(tmp_path: Path) -> None:
    # More passages than the corpus holds fails once the corpus is read, after the job's MLflow run started.
    tiny = [o for o in TINY if not o.startswith("retriever.top_k=")]
    result = run_cli("--multirun", "retriever.top_k=100000,1", f"paths.output_dir={tmp_path}", *tiny, check=False)
    assert result.returncode != 0  # Hydra reports the failure once every job has run
    runs = {r.data.params["retriever.top_k"]: r for r in runs_in(tmp_path)}
    assert runs["100000"].info.status == "FAILED" and "passage(s)" in runs["100000"].data.tags["error"]
    assert runs["1"].info.status == "FINISHED" and "odqa/acc" in runs["1"].data.metrics
    assert runs["100000"].data.tags["sweep_id"] == runs["1"].data.tags["sweep_id"]

    spec = {"name": "top_k", "experiment": "ragforget", "seeds": [0],
              "columns": [{"label": "bad k", "params": {"retriever.top_k": "100000"}},
                          {"label": "good k", "params": {"retriever.top_k": "1"}}],
              "rows": [{"metric": "odqa/acc"}]}
    report = run_report(report_cfg(tmp_path, f"sqlite:///{tmp_path}/mlflow.db", spec))
    md = (report.out_dir / "table.md").read_text()
    assert "FAILED bad k, seed 0" in md and "passage(s)" in md
    assert report.selection.used["good k"][0].run_id == runs["1"].info.run_id


@pytest.mark.slow
def test_optuna_sweep_of_two_trials_on_the_tiny_model(tmp_path: Path) -> None:
    run_cli("hparams_search=selfaug_optuna", "hydra.sweeper.n_trials=2", f"paths.output_dir={tmp_path}", *TINY)
    runs = runs_in(tmp_path, "selfaug_optuna")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    alphas = {float(r.data.params["method.terms.selfaug.weight"]) for r in runs}
    assert len(alphas) == 2 and all(0.05 <= a <= 1.0 for a in alphas)
    (results,) = (tmp_path / "multirun").glob("*/optimization_results.yaml")
    best = yaml.safe_load(results.read_text())
    objectives = [r.data.metrics["odqa/acc"] + r.data.metrics["retention/macro_avg"] for r in runs]
    assert best["best_value"] == pytest.approx(max(objectives))
    assert set(best["best_params"]) == {"method.terms.selfaug.weight", "train.lr"}



@pytest.mark.slow
def test_a_single_run_without_the_objective_metrics_finishes(tmp_path: Path) -> None:
    """No sweeper reads a single run's return value: it computes no objective, so no retention/macro_avg is fine."""
    result = run_cli(f"paths.output_dir={tmp_path}", *TINY, "eval.retention.tasks=[]", check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs_in(tmp_path)
    assert run.info.status == "FINISHED" and "odqa/acc" in run.data.metrics
    assert "retention/macro_avg" not in run.data.metrics


STORAGE = "sqlite:///${paths.output_dir}/optuna.db"  # what conf/hparams_search/selfaug_optuna.yaml suggests

# run.py with the first job's evaluation diverged to a NaN retention score (what a blown-up model gives).
# A NaN weight (objective.weights.0=nan) would do it too, but a config check refuses non-finite weights.
NAN_IN_FIRST_JOB = """
import ragforget.env
ragforget.env.apply_defaults()
import math, runpy, sys
from hydra.core.hydra_config import HydraConfig
import ragforget.pipeline as pipeline
evaluate = pipeline.evaluate_trained
def diverged(*args, **kwargs):
    metrics = evaluate(*args, **kwargs)
    if HydraConfig.get().job.num == 0:
        metrics["retention/macro_avg"] = math.nan
    return metrics
pipeline.evaluate_trained = diverged
sys.argv[0] = "run.py"
runpy.run_path("run.py", run_name="__main__")
"""


@pytest.mark.slow
def test_a_nan_objective_fails_its_trial_and_run_and_the_sweep_goes_on(tmp_path: Path) -> None:
    """The first of two Optuna trials evaluates to a NaN objective; the second is fine.

    The first job raises, so its MLflow run is FAILED with the reason, and the sweeper tells Optuna the
    trial FAILed (max_failure_rate: 1.0) and runs the next one. The study is kept in the sqlite file the
    config's comment suggests, which also checks that suggestion opens with the pinned optuna and SQLAlchemy.
    """
    import optuna

    args = ["hparams_search=selfaug_optuna", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.storage={_target_:optuna.storages.RDBStorage,"
            f"url:'{STORAGE}',engine_kwargs:{{isolation_level:AUTOCOMMIT}}}}",
            f"paths.output_dir={tmp_path}", *TINY]
    result = subprocess.run([sys.executable, "-c", NAN_IN_FIRST_JOB, *args], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = {r.info.status: r for r in runs_in(tmp_path, "selfaug_optuna")}
    assert sorted(runs) == ["FAILED", "FINISHED"]
    assert (runs["FAILED"].data.tags["sweep_job"], runs["FINISHED"].data.tags["sweep_job"]) == ("0", "1")
    error = runs["FAILED"].data.tags["error"]
    assert error.startswith("ObjectiveError: the sweep objective is nan") and "['retention/macro_avg']" in error
    assert "Failed experiment: the sweep objective is nan" in result.stdout + result.stderr

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db",
                                         engine_kwargs={"isolation_level": "AUTOCOMMIT"})
    study = optuna.load_study(study_name="selfaug_alpha_lr", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    finished = runs["FINISHED"].data.metrics
    assert study.best_value == pytest.approx(finished["odqa/acc"] + finished["retention/macro_avg"])
    (results,) = (tmp_path / "multirun").glob("*/optimization_results.yaml")
    assert yaml.safe_load(results.read_text())["best_value"] == pytest.approx(study.best_value)
