"""Resume: a run folder continues with its own config, and a run killed with SIGKILL ends as if never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import ROOT, TINY, cold_cache, compose_config, runs_in
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ragforget.assets.cache import resolve_cache_dir
from ragforget.errors import ConfigError
from ragforget.resume import resumed_config
from ragforget.training.datamodule import ResumableSampler
from ragforget.utils.io import TEMP_NAME

# 6 examples in batches of 2: 3 batches an epoch, so the step-2 and step-4 checkpoints fall mid-epoch.
# LoRA dropout on: a resumed run must also draw the same dropout masks.
RUN = [*TINY, "method=selfaug", "model.lora.dropout=0.1", "train.max_examples=6", "trainer.max_steps=6",
       "train.checkpoint_every_n_steps=2", "logger.log_every_n_steps=1", "eval.during_training.every_n_steps=2",
       "eval.during_training.limit=2"]


def test_sampler_resumes_mid_epoch_with_the_same_order() -> None:
    sampler = ResumableSampler(10, seed=3)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        epochs.append(list(sampler))
    assert sorted(epochs[0]) == list(range(10)) and epochs[0] != epochs[1]
    resumed = ResumableSampler(10, seed=3, resume_epoch=1, skip=4)
    resumed.set_epoch(1)
    assert list(resumed) == epochs[1][4:] and len(resumed) == 10
    resumed.set_epoch(2)
    assert len(list(resumed)) == 10  # only the epoch it resumed in is cut


def test_each_process_resumes_its_own_shard() -> None:
    shards = [list(ResumableSampler(10, seed=3, num_replicas=2, rank=r)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(10))
    assert list(ResumableSampler(10, seed=3, num_replicas=2, rank=1, resume_epoch=0, skip=2)) == shards[1][2:]


def _saved_run(tmp_path: Path, *overrides: str) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    OmegaConf.save(compose_config(list(overrides)), folder / "config.yaml", resolve=True)
    return folder


def test_resume_dir_alone_takes_the_saved_config(tmp_path: Path) -> None:
    folder = _saved_run(tmp_path, "method=selfaug", "model=tiny_random", "seed=3")
    cfg = resumed_config(compose_config([f"resume_dir={folder}"]), [f"resume_dir={folder}"])
    assert cfg.method.name == "selfaug" and cfg.model.name == "tiny_random" and cfg.seed == 3
    assert cfg.resume_dir == str(folder)


def test_repeating_the_original_overrides_is_accepted(tmp_path: Path) -> None:
    overrides = ["method=selfaug", "model=tiny_random"]
    folder = _saved_run(tmp_path, *overrides)
    composed = compose_config([*overrides, f"resume_dir={folder}", "device=cpu"])
    assert resumed_config(composed, [*overrides, f"resume_dir={folder}", "device=cpu"]).device == "cpu"


def test_overrides_that_change_the_run_are_refused_with_the_keys(tmp_path: Path) -> None:
    folder = _saved_run(tmp_path, "method=selfaug", "model=tiny_random")
    overrides = ["method=sft", "model=tiny_random", f"resume_dir={folder}"]
    before = (folder / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"method\.name") as error:
        resumed_config(compose_config(overrides), overrides)
    assert "method.terms.selfaug.weight" in str(error.value)
    assert (folder / "config.yaml").read_text() == before


def test_a_folder_without_a_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run folder"):
        resumed_config(compose_config([f"resume_dir={tmp_path / 'typo'}"]), [f"resume_dir={tmp_path / 'typo'}"])


def _job_folder(output_dir: Path) -> Path | None:
    folders = sorted(output_dir.glob("runs/*/*/config.yaml"))
    return folders[0].parent if folders else None


def _run(output_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "run.py", *args], cwd=ROOT, text=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _kill_when(process: subprocess.Popen[str], reached: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not reached():
        assert process.poll() is None, f"the run ended before the kill point:\n{process.stderr.read()[-2000:]}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _outcome(folder: Path) -> tuple[bytes, dict[str, float]]:
    """The adapter's bytes and the metrics, less timings and whether the base evaluation came from the cache."""
    adapter = (folder / "checkpoint" / "adapter" / "adapter_model.safetensors").read_bytes()
    metrics = json.loads((folder / "metrics.json").read_text())
    return adapter, {k: v for k, v in metrics.items() if not k.startswith(("time/", "base_eval/"))}


def _histories(output_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Every MLflow run's full metric histories (step, value) by run name, less timings."""
    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir}/mlflow.db")
    return {run.info.run_name: {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
                                for key in run.data.metrics if not key.startswith(("time/", "base_eval/"))}
            for run in runs_in(output_dir)}


def _finished(folder: Path) -> bool:
    """Whether every evaluation of the job was written: its own, and its last post-hoc variant's."""
    return (folder / "metrics.json").exists() and (not (folder / "variants").exists()
                                                   or (folder / "variants" / "w1.0" / "metrics.json").exists())


def _logged_past_a_checkpoint(folder: Path) -> bool:
    """A checkpoint is written and a later step's curves are logged: the resumed run replays that step."""
    if not (folder / "lightning" / "last.ckpt").exists():
        return False
    client = MlflowClient(tracking_uri=f"sqlite:///{folder.parents[2]}/mlflow.db")
    steps = [m.step for run in runs_in(folder.parents[2]) for m in client.get_metric_history(run.info.run_id,
                                                                                             "train/lr")]
    return bool(steps) and max(steps) % 2 == 1  # odd: past the checkpoint taken every 2 steps


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if TEMP_NAME.match(p.name)]


# (run, kill point, condition on the cache and the job folder). The prepare kill runs on a cold cache and
# lands while a cache entry is half-written; its resume must sweep that away and build the same entry.
RUN_WISE = [*TINY, "method=wise_ft", "method.posthoc.weights=[0.25,0.5,1.0]", "train.max_examples=6",
            "trainer.max_steps=4", "train.checkpoint_every_n_steps=2", "logger.log_every_n_steps=1"]
KILLS: list[tuple[list[str], str, Callable[[Path, Path], bool]]] = [
    (RUN, "during prepare", lambda cache, folder: bool(_temporaries(cache))),
    (RUN, "before training", lambda cache, folder: (folder / "config.yaml").exists()),
    (RUN, "during training", lambda cache, folder: _logged_past_a_checkpoint(folder)),
    (RUN, "during evaluation", lambda cache, folder: (folder / "checkpoint" / "adapter").exists()),
    (RUN_WISE, "between variants", lambda cache, folder: any(folder.glob("variants/*/metrics.json"))),
]


@pytest.mark.slow
def test_runs_killed_at_any_stage_resume_to_identical_results(tmp_path: Path) -> None:
    expected = {}
    for run in (RUN, RUN_WISE):
        reference_dir = tmp_path / f"uninterrupted-{len(expected)}"
        done = _run(reference_dir, *run, f"paths.output_dir={reference_dir}")
        assert done.wait() == 0, done.stderr.read()  # type: ignore[union-attr]
        expected[id(run)] = _outcome(_job_folder(reference_dir)), _histories(reference_dir)  # type: ignore[arg-type]

    for run, point, reached in KILLS:
        output_dir = tmp_path / point.replace(" ", "_")
        cache = cold_cache(tmp_path) if point == "during prepare" else resolve_cache_dir(None)
        killed = _run(output_dir, *run, f"paths.output_dir={output_dir}", f"paths.cache_dir={cache}")
        _kill_when(killed, lambda: (f := _job_folder(output_dir)) is not None and reached(cache, f))  # noqa: B023
        folder = _job_folder(output_dir)
        assert folder is not None and not _finished(folder), point
        resumed = _run(output_dir, f"resume_dir={folder}")
        assert resumed.wait() == 0, f"{point}: {resumed.stderr.read()[-3000:]}"  # type: ignore[union-attr]
        (adapter, metrics), histories = expected[id(run)]
        assert _outcome(folder) == (adapter, metrics), f"killed {point}: the adapter or the metrics differ"
        assert _histories(output_dir) == histories, f"killed {point}: the MLflow histories differ"
        assert {r.info.status for r in runs_in(output_dir)} == {"FINISHED"}, point  # finished by the resume
        if point == "during prepare":
            assert not _temporaries(cache), "the killed writer's temporary folder was not swept"
