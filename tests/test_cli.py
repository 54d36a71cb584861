"""run.py as a user runs it: subprocesses, Hydra command lines, MLflow runs and error messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny_random", "train.max_examples=4", "train.batch_size=2", "trainer.max_steps=2",
        "retriever.top_k=1", "prompt.max_passage_tokens=16", "eval.odqa.max_questions=4",
        "eval.odqa.max_new_tokens=4", "eval.retention.tasks=[wiki_ppl]", "eval.retention.limit=2",
        "eval.shift.num_texts=2", "eval.shift.max_tokens=16"]


def run_cli(*args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """run.py in a subprocess; ``timeout`` fails a job that hangs (e.g. a DDP rank waiting for a dead peer)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"run.py {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def runs_in(output_dir: Path, experiment_name: str = "ragforget") -> list:  # noqa: ANN201 - mlflow Runs
    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir}/mlflow.db")
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_unknown_option_lists_the_choices(tmp_path: Path) -> None:
    result = run_cli("method=nonexistent", f"paths.output_dir={tmp_path}", check=False)
    assert result.returncode != 0
    assert "sft" in result.stderr and "selfaug" in result.stderr


@pytest.mark.slow
def test_multirun_gives_one_mlflow_run_per_job(tmp_path: Path) -> None:
    run_cli("--multirun", "method=sft,selfaug", "seed=1,2", f"paths.output_dir={tmp_path}", *TINY)
    runs = runs_in(tmp_path)
    assert sorted(r.info.run_name for r in runs) == sorted(
        f"{m}-tiny_random-squad_open-s{s}" for m in ("sft", "selfaug") for s in (1, 2))
    assert all(r.info.status == "FINISHED" and "odqa/acc" in r.data.metrics for r in runs)


@pytest.mark.slow
def test_quick_experiment_on_the_real_default_model(tmp_path: Path) -> None:
    """The README's main job, shrunk to experiment=quick, on SmolLM2-135M-Instruct."""
    result = run_cli("experiment=quick", f"paths.output_dir={tmp_path}")
    assert "| odqa/acc |" in result.stdout and "| retention/macro_avg |" in result.stdout
    (run,) = runs_in(tmp_path)
    assert run.info.status == "FINISHED" and run.data.tags["model"] == "smollm2_135m"
    metrics = run.data.metrics
    assert metrics["odqa/acc"] > 0.05  # the base model already answers some questions from its passages
    assert metrics["shift/kl"] > 0


@pytest.mark.slow
def test_synthesize_stage_on_the_real_default_model(tmp_path: Path) -> None:
    """self_synth's passes with SmolLM2's real chat template and sampling (committee shrunk to itself)."""
    run_cli("stage=synthesize", "method=self_synth_1x3", f"paths.output_dir={tmp_path}",
            "method.self_synth.instructions.count=8", "method.self_synth.responses.max_new_tokens=24")
    (run,) = runs_in(tmp_path)
    metrics = run.data.metrics
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "synthesize"
    assert metrics["self_synth/instructions_sampled"] == 8
    # The real model ends most of its sampled requests within 64 tokens, and judges its own answers.
    assert metrics["self_synth/instructions_kept"] >= 4
    assert metrics["self_synth/scores"] == 3 * metrics["self_synth/instructions_kept"] - \
        metrics["self_synth/candidates_unusable"]
