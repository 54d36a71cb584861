"""How an MLflow run ends: FINISHED when its block completes, KILLED when stopped from outside, else FAILED.

``tracked_run`` is the one place a run is ended: every stage that opens a run does so with it, so no run
is left RUNNING (what a dashboard shows for a job still going) by an error or a Ctrl-C. A run that a user
stopped (Ctrl-C) or a scheduler terminated (SIGTERM) did not fail: its config and code may be fine, and
reports and dashboards should not count it among the runs that broke.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ragforget.tracking.mlflow_run import TrackedRun

FINISHED = "FINISHED"
FAILED = "FAILED"
KILLED = "KILLED"


def _stopped_from_outside(exc: BaseException) -> bool:
    """Ctrl-C, or SIGTERM as Lightning reports it (``SIGTERMException``, a ``SystemExit``, raised by its loops)."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, SystemExit):
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        return isinstance(exc, SIGTERMException)
    return False


def terminal_status(exc: BaseException) -> str:
    """``KILLED`` if ``exc`` or an exception it was raised from or while handling is a Ctrl-C or a SIGTERM.

    The chain matters: Lightning catches a KeyboardInterrupt inside ``trainer.fit`` and calls ``sys.exit(1)``
    in its handler, so Ctrl-C during training reaches the job as a ``SystemExit`` whose ``__context__`` is
    the KeyboardInterrupt. Any other error, including a plain ``SystemExit``, is ``FAILED``.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if _stopped_from_outside(current):
            return KILLED
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return FAILED


@contextmanager
def tracked_run(run: TrackedRun, run_name: str, tags: Mapping[str, str],
                run_id: str | None = None) -> Iterator[TrackedRun]:
    """Start ``run`` (or reopen ``run_id``, resuming) for the block, then end it with the block's status.

    FINISHED when the block completes; when it raises, ``terminal_status`` of the error, with the error's
    type and message as the run's ``error`` tag, and the error goes on.
    """
    run.start(run_name, tags, run_id=run_id)
    try:
        yield run
    except BaseException as exc:
        run.finish(terminal_status(exc), error=f"{type(exc).__name__}: {exc}")
        raise
    run.finish(FINISHED)
