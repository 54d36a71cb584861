"""The retriever contract: build or load an index over a corpus, then return ranked passage ids."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from omegaconf import DictConfig

if TYPE_CHECKING:
    from ragforget.tracking.mlflow_run import TrackedRun

Hit = tuple[str, float]
"""One retrieved passage: (corpus id, score); lists of hits are ordered best first."""


class RetrievalAssets(Protocol):
    """What a retriever reads from the prepared assets (``prepare.PreparedAssets`` has all of it)."""

    @property
    def cache_dir(self) -> Path: ...

    @property
    def model_path(self) -> str: ...

    @property
    def splits(self) -> Mapping[str, Path]: ...

    @property
    def corpus_path(self) -> Path: ...


@dataclass
class RetrieverContext:
    """What a retriever that learns (invar) needs from the job, and what it reports back to MLflow."""

    cfg: DictConfig                           # the job's resolved config
    assets: RetrievalAssets                   # cache dir, model path, splits, corpus
    corpus_by_id: Mapping[str, Mapping[str, Any]]
    corpus_hash: str
    run: TrackedRun | None = None             # the job's run, for training curves
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class Retriever(abc.ABC):
    """A retriever whose index is cached per (``cache_params()``, corpus hash) by retrieval.cache."""

    name: ClassVar[str]
    # False for retrievers that search nothing themselves (closed book, oracle).
    needs_index: ClassVar[bool] = True

    @abc.abstractmethod
    def cache_params(self) -> dict[str, Any]:
        """Everything besides the corpus that determines the index and the results (the cache key)."""

    def prepare(self, context: RetrieverContext) -> None:  # noqa: B027 - an optional hook, empty by default
        """One-off work before the index is built or loaded (a trained retriever trains here)."""

    def dependencies(self) -> list[Retriever]:
        """Retrievers whose indexes must be ready before this one searches (oracle's distractors)."""
        return []

    @abc.abstractmethod
    def build_index(self, corpus: list[dict[str, Any]], index_dir: Path) -> None:
        """Index ``corpus`` records ({id, contents, title}) into the empty folder ``index_dir``."""

    @abc.abstractmethod
    def load_index(self, index_dir: Path) -> None:
        """Load an index written by :meth:`build_index`."""

    @abc.abstractmethod
    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Return up to ``k`` (id, score) hits per query, best first."""

    def search_records(self, records: Sequence[Mapping[str, Any]], k: int) -> list[list[Hit]]:
        """Search QA records ({id, question, ...}); retrievers that need more than the question override it."""
        return self.search([record["question"] for record in records], k)
