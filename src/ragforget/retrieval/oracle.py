"""Oracle retrieval: the gold passage plus k-1 retrieved distractors, at a random position.

Used to separate reading from retrieval: with the gold passage always present, answer errors are
the reader's. The position is drawn per question from (seed, question id), so it is the same in
every run and independent of the order in which questions are processed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from ragforget.errors import ConfigError
from ragforget.retrieval.base import Hit, Retriever
from ragforget.retrieval.bm25 import BM25Retriever
from ragforget.utils.hashing import stable_hash


class OracleRetriever(Retriever):
    """Gold passage (``metadata.gold_passage_id``) among distractors from a base retriever.

    Scores are positional (k for the first hit down to 1 for the last): the order is deliberately
    random, so the base retriever's scores would not describe it.
    """

    name: ClassVar[str] = "oracle"
    needs_index: ClassVar[bool] = False

    def __init__(self, distractors: Retriever | None = None, seed: int = 0) -> None:
        self.distractors = distractors if distractors is not None else BM25Retriever()
        self.seed = int(seed)

    def cache_params(self) -> dict[str, Any]:
        """The distractor retriever's identity and the position seed."""
        return {"distractors": {"name": self.distractors.name, **self.distractors.cache_params()},
                "seed": self.seed}

    def dependencies(self) -> list[Retriever]:
        """The distractor retriever's index is the only one needed."""
        return [self.distractors]

    def build_index(self, corpus: list[dict[str, Any]], index_dir: Path) -> None:
        """Nothing of its own: the distractor retriever's index is built as a dependency."""

    def load_index(self, index_dir: Path) -> None:
        """Nothing of its own to load."""

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Refuse: a bare question carries no gold passage."""
        raise TypeError("OracleRetriever needs QA records with metadata.gold_passage_id; call search_records")

    def search_records(self, records: Sequence[Mapping[str, Any]], k: int) -> list[list[Hit]]:
        """Exactly ``k`` hits per record (fewer only if the corpus is smaller): gold once, then distractors."""
        golds = [gold_passage_id(record) for record in records]
        if k <= 0:
            return [[] for _ in records]
        # k distractor candidates so that k-1 remain after dropping the gold if it was retrieved.
        candidates = self.distractors.search_records(records, k)
        results: list[list[Hit]] = []
        for record, gold, hits in zip(records, golds, candidates):
            ids = [doc_id for doc_id, _ in hits if doc_id != gold][: k - 1]
            position = random.Random(stable_hash([self.seed, str(record["id"])])).randrange(len(ids) + 1)
            ids.insert(position, gold)
            results.append([(doc_id, float(len(ids) - rank)) for rank, doc_id in enumerate(ids)])
        return results


def gold_passage_id(record: Mapping[str, Any]) -> str:
    """The record's gold passage id, or a ConfigError saying this dataset cannot run with the oracle."""
    gold = (record.get("metadata") or {}).get("gold_passage_id")
    if not gold:
        raise ConfigError(
            "retriever",
            f"retriever=oracle needs metadata.gold_passage_id, but record {record.get('id')!r} has none: "
            "this dataset has no gold passages",
            "choose retriever=bm25 or retriever=dense for this dataset",
        )
    return str(gold)
