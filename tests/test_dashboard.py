"""The dashboard (``make dashboard``): the real ``mlflow server`` over a store the suite's own
TrackedRun wrote, queried over HTTP with MLflow's client, then stopped with all its children."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ragforget.tracking import dashboard
from ragforget.tracking.dashboard import server_command, server_env, wait_until_ready
from ragforget.tracking.mlflow_run import TrackedRun

# (method, seed, odqa/acc, retention/macro_avg) of sweep "abc"; sweep "other" has one more run.
SWEEP = [("sft", 0, 0.41, 0.62), ("sft", 1, 0.43, 0.60), ("selfaug", 0, 0.47, 0.66)]


@dataclass
class Dashboard:
    url: str
    store: Path
    run_ids: dict[tuple[str, int], str]
    startup_s: float


def build_store(store: Path) -> dict[tuple[str, int], str]:
    """A small sweep written as the pipeline writes it (same experiment, tags and metric names)."""
    tracked = TrackedRun(f"sqlite:///{store}/mlflow.db", "ragforget", str(store / "mlartifacts"))
    summary = store / "summary.json"
    summary.write_text(json.dumps({"odqa/acc": SWEEP[0][2]}))
    run_ids: dict[tuple[str, int], str] = {}
    rows = [("abc", *row) for row in SWEEP] + [("other", "sft", 0, 0.10, 0.20)]
    for sweep_id, method, seed, acc, retention in rows:
        run_id = tracked.start(f"{method}-seed{seed}", {"sweep_id": sweep_id, "method": method, "seed": str(seed)})
        tracked.log_metrics({"odqa/acc": acc, "retention/macro_avg": retention})
        if sweep_id == "abc":
            run_ids[(method, seed)] = run_id
            if (method, seed) == ("sft", 0):
                tracked.log_artifact(summary, "results")
        tracked.finish()
    return run_ids


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (mlflow server -> uvicorn), SIGKILL what lingers, and
    check that nothing of the group survives."""
    pgid = proc.pid  # start_new_session: the server leads its own group
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return  # the group is gone
        if time.monotonic() > deadline:
            os.killpg(pgid, signal.SIGKILL)
            raise AssertionError(f"mlflow server's process group {pgid} outlived SIGTERM")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    store = tmp_path_factory.mktemp("dashboard")
    run_ids = build_store(store)
    port = free_port()
    log_path = store / "server.log"
    with log_path.open("wb") as server_log:
        start = time.monotonic()
        # Exactly what `make dashboard` (dashboard.main) execs, in its own process group.
        proc = subprocess.Popen(server_command(store, port=port), env=server_env(), stdout=server_log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_until_ready(url, timeout=120)
            except TimeoutError:
                raise AssertionError(f"server not ready:\n{log_path.read_text()[-3000:]}") from None
            yield Dashboard(url, store, run_ids, time.monotonic() - start)
        finally:
            stop_group(proc)


def test_sweep_runs_tags_and_metrics_over_http(served: Dashboard) -> None:
    client = MlflowClient(tracking_uri=served.url)
    experiment = client.get_experiment_by_name("ragforget")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.sweep_id = 'abc'")
    assert len(runs) == len(SWEEP)
    got = {(r.data.tags["method"], int(r.data.tags["seed"])): r for r in runs}
    assert set(got) == {(method, seed) for method, seed, _, _ in SWEEP}
    for method, seed, acc, retention in SWEEP:
        run = got[(method, seed)]
        assert run.info.run_id == served.run_ids[(method, seed)]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["odqa/acc"] == pytest.approx(acc)
        assert run.data.metrics["retention/macro_avg"] == pytest.approx(retention)
    # The filter is what separates sweeps: the other sweep's run is there too.
    assert len(client.search_runs([experiment.experiment_id])) == len(SWEEP) + 1
    best = client.search_runs([experiment.experiment_id], filter_string="tags.sweep_id = 'abc'",
                              order_by=["metrics.`odqa/acc` DESC"], max_results=1)
    assert best[0].data.tags["method"] == "selfaug"
    # About 5 s here with one worker and no job runner; a regression shows as a slow start.
    assert served.startup_s < 60, f"mlflow server took {served.startup_s:.1f} s to start"


def test_ui_lists_and_serves_local_artifacts(served: Dashboard) -> None:
    """The UI's own endpoints read artifacts from the runs' local artifact location."""
    run_id = served.run_ids[("sft", 0)]
    with urllib.request.urlopen(f"{served.url}/ajax-api/2.0/mlflow/artifacts/list"
                                f"?run_id={run_id}&path=results") as response:
        listing = json.load(response)
    assert [f["path"] for f in listing["files"]] == ["results/summary.json"]
    assert listing["root_uri"].startswith(str(served.store / "mlartifacts"))
    with urllib.request.urlopen(f"{served.url}/get-artifact?path=results/summary.json&run_uuid={run_id}") as response:
        assert json.load(response) == {"odqa/acc": SWEEP[0][2]}


def test_main_execs_the_same_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make dashboard` runs dashboard.main, which replaces itself with server_command's server."""
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(dashboard.os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    dashboard.main(["--output-dir", str(tmp_path), "--port", "5123", "--allowed-hosts", "example.org"])
    [(path, argv, env)] = calls
    assert argv == server_command(tmp_path, port=5123, extra_args=["--allowed-hosts", "example.org"])
    assert path == argv[0]
    assert argv[argv.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
