"""Errors a user can act on: each names where the problem is and what to do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class RagforgetError(Exception):
    """Base class for errors meant for the user, not for a traceback reader."""


class ConfigError(RagforgetError):
    """A config value is missing or invalid. The message names the key.

    ``relative``: ``key`` is relative to the config node being built, as a part's constructor knows
    it (its own parameter name, e.g. ``weight``); whoever instantiates the node puts the node's full
    key in front (``ragforget.utils.instantiate``), so the user reads ``method.terms.selfaug.weight``.
    An absolute key (the default) is left as it is: code that checks ``train.lr`` names ``train.lr``.
    """

    def __init__(self, key: str, problem: str, hint: str = "", *, relative: bool = False) -> None:
        self.key = key
        self.problem = problem
        self.hint = hint
        self.relative = relative
        message = f"config key '{key}': {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)

    def under(self, prefix: str, *, relative: bool = False) -> ConfigError:
        """This error with a relative key placed under ``prefix`` (an absolute key is returned as is).

        ``relative``: ``prefix`` is itself relative (a field of an enclosing node), so the result
        still waits for the enclosing node's full key.
        """
        if not self.relative:
            return self
        key = f"{prefix}.{self.key}" if prefix else self.key
        return ConfigError(key, self.problem, self.hint, relative=relative)


@contextmanager
def keys_under(prefix: str, *, relative: bool = False) -> Iterator[None]:
    """Within: a relative ConfigError comes out with its key under ``prefix`` (absolute ones pass as they are).

    Where a part was built from the node at ``prefix``, and it raises later (a partial's call, a data
    transform at work); ``relative``: ``prefix`` is itself relative (a part's own field, e.g. ``source``).
    """
    try:
        yield
    except ConfigError as error:
        if not error.relative:
            raise
        raise error.under(prefix, relative=relative) from None


def require(condition: bool, key: str, problem: str, hint: str = "", *, relative: bool = False) -> None:
    """Raise ConfigError naming ``key`` unless ``condition`` holds (settings are checked where they are used).

    A part's constructor passes its own parameter name with ``relative=True``; see ConfigError.
    """
    if not condition:
        raise ConfigError(key, problem, hint, relative=relative)


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
