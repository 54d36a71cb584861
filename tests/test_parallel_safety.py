"""Parallel jobs on one cache: each entry is built once, nothing published is deleted, killed writers'
leftovers are swept, and a joblib sweep on a cold cache evaluates the base model once."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, TINY, cold_cache, runs_in

from ragforget.synth.journal import Journal, run_journaled
from ragforget.utils.io import TEMP_NAME, atomic_path, cache_lock, remove_stale_temps

FORK = multiprocessing.get_context("fork")


def _build_entry(entry: Path, builds: Path) -> None:
    """What every cache site does: under the entry's lock, build it unless it is there."""
    with cache_lock(entry):
        if entry.exists():
            return
        with builds.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        with atomic_path(entry) as tmp:
            tmp.mkdir()
            time.sleep(0.5)  # long enough for the other process to arrive while this one builds
            (tmp / "data.txt").write_text(str(os.getpid()))


def test_concurrent_jobs_build_a_cache_entry_once(tmp_path: Path) -> None:
    entry, builds = tmp_path / "cache" / "entry", tmp_path / "builds.txt"
    workers = [FORK.Process(target=_build_entry, args=(entry, builds)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [w.exitcode for w in workers] == [0, 0, 0]
    (builder,) = builds.read_text().split()
    assert (entry / "data.txt").read_text() == builder


def test_a_published_folder_is_never_replaced(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    with atomic_path(entry) as first:
        first.mkdir()
        (first / "v").write_text("first")
    reader = (entry / "v").open()  # another job reading the published entry
    with atomic_path(entry) as second:
        second.mkdir()
        (second / "v").write_text("second")
    assert (entry / "v").read_text() == "first" and reader.read() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # the loser's copy is gone


WRITER = """
import sys, time
from ragforget.utils.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.mkdir()
    (tmp / "part").write_text("half")
    print("writing", flush=True)
    time.sleep(600)
"""


def test_stale_temporaries_of_killed_writers_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / name)], stdout=subprocess.PIPE,
                                text=True) for name in ("killed", "live")]
    try:
        for writer in writers:
            assert writer.stdout.readline().strip() == "writing"  # type: ignore[union-attr]
        writers[0].send_signal(signal.SIGKILL)
        writers[0].wait()
        temporaries = sorted(p.name for p in tmp_path.iterdir() if TEMP_NAME.match(p.name))
        assert len(temporaries) == 2
        (removed,) = remove_stale_temps(tmp_path)
        assert removed.name.startswith(".killed.")
        assert [p.name for p in tmp_path.iterdir()] == [n for n in temporaries if n.startswith(".live.")]
    finally:
        writers[1].kill()
        writers[1].wait()


def _journal_pass(path: Path, calls: Path) -> None:
    def work(batch: list[int]) -> list[dict[str, object]]:
        with calls.open("a") as handle:
            handle.write(f"{batch}\n")
        time.sleep(0.1)
        return [{"key": str(item), "square": item * item} for item in batch]

    run_journaled(list(range(8)), str, Journal(path), work, batch_size=2, seed=0, desc="squares")


def test_two_jobs_on_one_journal_write_each_record_once(tmp_path: Path) -> None:
    journal, calls = tmp_path / "journal.jsonl", tmp_path / "calls.txt"
    workers = [FORK.Process(target=_journal_pass, args=(journal, calls)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [w.exitcode for w in workers] == [0, 0]
    keys = [json.loads(line)["key"] for line in journal.read_text().splitlines()]
    assert sorted(keys) == [str(i) for i in range(8)]  # each once: the second job found the pass done
    assert len(calls.read_text().splitlines()) == 4


@pytest.mark.slow
def test_a_parallel_sweep_on_a_cold_cache_builds_and_evaluates_once(tmp_path: Path) -> None:
    """joblib n_jobs=2 (the code path of every parallel launcher): each job prepares the same assets."""
    cache = cold_cache(tmp_path)
    result = subprocess.run(
        [sys.executable, "run.py", "--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY,
         "seed=0,1", f"paths.output_dir={tmp_path}", f"paths.cache_dir={cache}"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    runs = runs_in(tmp_path)
    assert sorted(run.data.tags["seed"] for run in runs) == ["0", "1"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert len({run.data.tags["sweep_id"] for run in runs}) == 1
    # One job evaluated the base model; the other waited for it and reused its numbers.
    assert sorted(run.data.metrics["base_eval/reused"] for run in runs) == [0.0, 1.0]
    logs = "".join(path.read_text() for path in tmp_path.glob("multirun/*/*/*.log"))
    # What each entry's builder logs, across both jobs' logs: the eval and the shift suites are two entries.
    for built, entries in {"built bm25 index": 1, "retention suite with": 2, "evaluating the base model once": 1,
                           "held-out summaries": 1}.items():
        assert logs.count(built) == entries, built
    assert not [p for p in cache.rglob(".*") if TEMP_NAME.match(p.name)]
