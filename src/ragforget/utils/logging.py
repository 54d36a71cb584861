"""Logger factory so every module logs under the ``ragforget`` namespace."""

from __future__ import annotations

import logging


def get_logger(name: str) -> logging.Logger:
    """Return a module logger; Hydra's job logging configures handlers and levels."""
    return logging.getLogger(name if name.startswith("ragforget") else f"ragforget.{name}")
