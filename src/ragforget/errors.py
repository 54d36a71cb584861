"""Errors a user can act on: each names where the problem is and what to do."""

from __future__ import annotations


class RagforgetError(Exception):
    """Base class for errors meant for the user, not for a traceback reader."""


class ConfigError(RagforgetError):
    """A config value is missing or invalid. The message names the key."""

    def __init__(self, key: str, problem: str, hint: str = "") -> None:
        self.key = key
        message = f"config key '{key}': {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class DataError(RagforgetError):
    """An input file is malformed. The message names the file and line."""

    def __init__(self, path: object, line: int | None, problem: str, hint: str = "") -> None:
        self.path = str(path)
        self.line = line
        where = f"{path}:{line}" if line is not None else f"{path}"
        message = f"{where}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class AssetError(RagforgetError):
    """A packaged asset could not be fetched, verified or unpacked."""
