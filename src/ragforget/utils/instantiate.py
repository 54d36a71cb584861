"""``hydra.utils.instantiate`` that lets our own errors through unwrapped.

Hydra wraps whatever a constructor raises in an InstantiationException whose message starts with
its own call details; a user should read ours first: the config key, the problem, what to do.
"""

from __future__ import annotations

from typing import Any

import hydra
from hydra.errors import InstantiationException

from ragforget.errors import RagforgetError


def instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return hydra.utils.instantiate(config, *args, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None:
            if isinstance(cause, RagforgetError):
                raise cause from None
            cause = cause.__cause__
        raise
