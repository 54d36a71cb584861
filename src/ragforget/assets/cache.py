"""Where fetched and derived assets live.

Order of precedence: an explicit ``paths.cache_dir`` config value, then ``$RAGFORGET_CACHE``,
then ``~/.cache/ragforget``. Everything under it can be deleted; it is rebuilt on next use.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "RAGFORGET_CACHE"


def resolve_cache_dir(configured: str | os.PathLike[str] | None = None) -> Path:
    """Return the cache root, creating it if needed."""
    raw = configured or os.environ.get(ENV_VAR) or Path.home() / ".cache" / "ragforget"
    path = Path(raw).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
