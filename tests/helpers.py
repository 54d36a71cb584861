"""What tests share: composing configs, the tiny settings, running run.py, reading runs back.

Test files import these from here, never from each other; conftest.py holds only fixtures and the
offline switches (set before any Hugging Face import).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")

# A job on the tiny random model in seconds: 2 steps, 4 questions, 2 retention items (for run.py).
TINY = ["model=tiny_random", "train.max_examples=4", "train.batch_size=2", "trainer.max_steps=2",
        "retriever.top_k=1", "prompt.max_passage_tokens=16", "eval.odqa.max_questions=4",
        "eval.odqa.max_new_tokens=4", "eval.retention.tasks=[wiki_ppl]", "eval.retention.limit=2",
        "eval.shift.num_texts=2", "eval.shift.max_tokens=16"]

# A little more of each, with a resume checkpoint every 2 of 4 steps (for the in-process pipeline).
TINY_TRAIN = ["model=tiny_random", "train.max_examples=8", "train.batch_size=2", "trainer.max_steps=4",
              "train.checkpoint_every_n_steps=2", "retriever.top_k=2", "prompt.max_passage_tokens=24",
              "eval.odqa.max_questions=6", "eval.odqa.max_new_tokens=4", "eval.retention.tasks=[wiki_ppl]",
              "eval.retention.limit=4", "eval.shift.num_texts=4", "eval.shift.max_tokens=32",
              "logger.log_every_n_steps=2"]


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose conf/config.yaml with overrides, as run.py would (without a Hydra run)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


def tiny_config(tmp_path: Path, *overrides: str) -> DictConfig:
    return compose_config([*TINY_TRAIN, f"paths.output_dir={tmp_path}", *overrides])


def run_of(cfg: DictConfig, workdir: Path):  # noqa: ANN201 - an mlflow Run
    """The MLflow run of the job that ran in ``workdir``."""
    from ragforget.pipeline import RUN_ID_FILE

    client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
    return client.get_run((workdir / RUN_ID_FILE).read_text().strip())


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


def visible(folder: Path) -> list[str]:
    """The entries of ``folder`` a user sees: not the hidden lock files of cache entries."""
    return sorted(p.name for p in Path(folder).iterdir() if not p.name.startswith("."))


def cold_cache(tmp_path: Path) -> Path:
    """An asset cache with only the downloaded packages and model snapshots (shared with the real cache):
    corpus, QA splits, retention suites, indexes and every method's cache are built from scratch."""
    from ragforget.assets.cache import resolve_cache_dir

    cache = tmp_path / "cold_cache"
    cache.mkdir()
    shared = resolve_cache_dir(None)
    for name in ("downloads", "models"):
        (shared / name).mkdir(exist_ok=True)
        (cache / name).symlink_to(shared / name)
    return cache


def model_snapshot(model: str) -> str:
    """The snapshot folder of ``conf/model/<model>.yaml``, materialized once per cache."""
    import hydra

    from ragforget.assets.cache import resolve_cache_dir

    cfg = compose_config([f"model={model}"])
    return hydra.utils.instantiate(cfg.model.source).materialize(resolve_cache_dir(cfg.paths.cache_dir))
