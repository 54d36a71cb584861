"""Config values as plain Python containers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def plain(value: Any) -> Any:
    """Hydra hands over DictConfig/ListConfig (with ``_recursive_: false``, or to libraries that want
    plain dicts and lists); this resolves and converts them recursively."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [plain(v) for v in value]
    return value
