"""Checks for user-written prompt templates (str.format placeholders)."""

from __future__ import annotations

import string
from collections.abc import Set

from ragforget.errors import ConfigError


def check_placeholders(template: str, expected: Set[str], key: str, *, relative: bool = False) -> None:
    """ConfigError naming ``key`` unless ``template`` formats with exactly the ``expected`` fields.

    ``relative``: ``key`` is a constructor's own parameter name (see ``ConfigError``).
    """
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:  # an unmatched brace
        raise ConfigError(key, f"is not a format string ({exc})", "write literal braces as {{ and }}",
                          relative=relative) from None
    if fields != set(expected):
        names = " and ".join(f"{{{name}}}" for name in sorted(expected))
        raise ConfigError(key, f"must use exactly the placeholders {names}, got {sorted(fields)}",
                          "write literal braces as {{ and }}", relative=relative)
