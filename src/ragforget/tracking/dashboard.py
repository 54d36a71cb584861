"""The MLflow dashboard: ``mlflow server`` over the project's store (``make dashboard``).

The store is the one ``conf/logger/mlflow.yaml`` writes by default: ``<output_dir>/mlflow.db`` with
artifacts under ``<output_dir>/mlartifacts``. Our experiments are created with that local,
absolute artifact location, and the server reads such locations directly, so the UI shows them
without a flag. ``--artifacts-destination`` only pins where the server's own artifact proxy
(``mlflow-artifacts:/``: experiments created from the UI or over HTTP without a location) stores
files: in the same folder rather than in ``./mlartifacts`` of whatever directory it was started
from. Bound to 127.0.0.1, MLflow's default host-header and CORS checks already admit
``http://127.0.0.1:<port>`` and ``http://localhost:<port>``; anything else (``--host 0.0.0.0``)
needs ``--allowed-hosts``/``--cors-allowed-origins``, which :func:`main` passes through.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from ragforget.utils.logging import get_logger

log = get_logger("ragforget.tracking.dashboard")  # not "__main__" under python -m

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
# One worker: a single-user dashboard; the default four take longer to start and to hold memory.
DEFAULT_WORKERS = 1
# MLflow 3's server also starts a job runner with seven huey consumers (and a temp folder in
# /dev/shm) for GenAI jobs (scorers, prompt optimisation) the suite never submits.
SERVER_ENV_DEFAULTS: dict[str, str] = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def backend_store_uri(output_dir: Path) -> str:
    """The sqlite store the runs write by default (``logger.tracking_uri``)."""
    return f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


def server_command(output_dir: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                   extra_args: Sequence[str] = ()) -> list[str]:
    """The ``mlflow server`` command line over ``output_dir``'s store, run by this interpreter."""
    output_dir = Path(output_dir).resolve()
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri(output_dir),
        "--artifacts-destination", str(output_dir / "mlartifacts"),
        "--host", host,
        "--port", str(port),
        "--workers", str(DEFAULT_WORKERS),
        *extra_args,
    ]


def server_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ``base`` (default ``os.environ``) plus :data:`SERVER_ENV_DEFAULTS`
    where unset."""
    env = dict(os.environ if base is None else base)
    for key, value in SERVER_ENV_DEFAULTS.items():
        env.setdefault(key, value)
    return env


def server_url(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    return f"http://{host}:{port}"


def wait_until_ready(url: str, timeout: float = 60.0, interval: float = 0.25) -> float:
    """Poll ``<url>/health`` until it answers 200; return the seconds waited.

    Raises ``TimeoutError`` when the server does not answer within ``timeout`` seconds.
    """
    start = time.monotonic()
    health = f"{url.rstrip('/')}/health"
    while True:
        try:
            with urllib.request.urlopen(health, timeout=2.0) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"MLflow server at {url} not ready after {timeout:.0f} s")
        time.sleep(interval)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the dashboard in the foreground (this process becomes ``mlflow server``).

    Options this parser does not know are passed on to ``mlflow server`` (e.g. ``--allowed-hosts``).
    """
    parser = argparse.ArgumentParser(prog="python -m ragforget.tracking.dashboard",
                                     description="MLflow UI over the project's tracking store.",
                                     epilog="Other options go to `mlflow server` (e.g. --allowed-hosts).")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs"),
                        help="folder holding mlflow.db and mlartifacts (paths.output_dir)")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args, extra = parser.parse_known_args(argv)

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    db = args.output_dir.resolve() / "mlflow.db"
    if not db.exists():
        log.warning("%s does not exist yet; the server creates an empty store (run `make run` first)", db)
        db.parent.mkdir(parents=True, exist_ok=True)
    command = server_command(args.output_dir, args.host, args.port, extra)
    log.info("MLflow dashboard on %s (store %s); Ctrl-C stops it", server_url(args.host, args.port),
             backend_store_uri(args.output_dir))
    log.debug("exec %s", " ".join(command))
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.execve(command[0], command, server_env())


if __name__ == "__main__":
    main()
