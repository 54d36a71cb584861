"""The MLflow status a run ends with when its job raised: KILLED when stopped from outside, else FAILED.

A run that a user stopped (Ctrl-C) or a scheduler terminated (SIGTERM) did not fail: its config and code may
be fine, and reports and dashboards should not count it among the runs that broke.
"""

from __future__ import annotations

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
