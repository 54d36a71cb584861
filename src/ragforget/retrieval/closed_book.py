"""Closed book: no retrieval at all, so the model answers from its parameters alone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from ragforget.retrieval.base import Hit, Retriever


class ClosedBookRetriever(Retriever):
    """Returns no passages for any query; has no index."""

    name: ClassVar[str] = "none"
    needs_index: ClassVar[bool] = False

    def cache_params(self) -> dict[str, Any]:
        """Nothing to vary."""
        return {}

    def build_index(self, corpus: list[dict[str, Any]], index_dir: Path) -> None:
        """Nothing to build."""

    def load_index(self, index_dir: Path) -> None:
        """Nothing to load."""

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """An empty hit list per query, whatever ``k``."""
        return [[] for _ in queries]
