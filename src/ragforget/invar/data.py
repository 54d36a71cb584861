"""Stage-1 training data: each question with its gold passage and BM25-mined hard negatives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragforget.data.answers import substring_match
from ragforget.retrieval.base import Hit


@dataclass(frozen=True)
class RetrievalExample:
    """A query, the passage that answers it, and passages that look relevant but are not it."""

    query: str
    positive: str
    negatives: tuple[str, ...]


def positive_id(record: Mapping[str, Any], hits: Sequence[Hit], corpus: Mapping[str, Mapping[str, Any]]
                ) -> str | None:
    """The gold passage when the dataset names one, else the best hit containing a gold answer (as DPR)."""
    gold = (record.get("metadata") or {}).get("gold_passage_id")
    if gold:
        return str(gold)
    for doc_id, _ in hits:
        if substring_match(corpus[doc_id]["contents"], record.get("golden_answers", [])) == 1.0:
            return doc_id
    return None


def retrieval_examples(records: Sequence[Mapping[str, Any]], hits: Mapping[str, Sequence[Hit]],
                       corpus: Mapping[str, Mapping[str, Any]], n_negatives: int) -> list[RetrievalExample]:
    """One example per record with a positive and ``n_negatives`` hard negatives among its hits.

    Hard negatives are the highest-ranked hits that are not the positive and contain no gold
    answer (a passage that answers the question is not a negative, whatever its id).
    """
    examples = []
    for record in records:
        record_hits = hits[record["id"]]
        positive = positive_id(record, record_hits, corpus)
        if positive is None or positive not in corpus:
            continue
        answers = record.get("golden_answers", [])
        negatives = [corpus[doc_id]["contents"] for doc_id, _ in record_hits
                     if doc_id != positive and substring_match(corpus[doc_id]["contents"], answers) == 0.0]
        if len(negatives) >= n_negatives:
            examples.append(RetrievalExample(record["question"], corpus[positive]["contents"],
                                             tuple(negatives[:n_negatives])))
    return examples
