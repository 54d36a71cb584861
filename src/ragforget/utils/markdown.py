"""Markdown tables, as every table the suite prints or writes them: a label column, then numbers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Lines of a table whose first column is left-aligned and the others right-aligned (numbers)."""
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]
