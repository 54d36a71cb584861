"""Retrieval quality: does any of the top-k passages contain a gold answer (answer recall@k)?

Answers and passages are compared after SQuAD normalization, on whole tokens, so "art" does not
match "start".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ragforget.data.answers import normalize_answer
from ragforget.utils.logging import get_logger
from ragforget.utils.markdown import markdown_table

log = get_logger(__name__)

def has_answer(passage_text: str, golden_answers: Iterable[str]) -> bool:
    """True if some normalized gold answer occurs in the normalized passage as a whole-token span."""
    passage = f" {normalize_answer(passage_text)} "
    for answer in golden_answers:
        normalized = normalize_answer(answer)
        # An answer that normalizes to nothing ("The") would match every passage.
        if normalized and f" {normalized} " in passage:
            return True
    return False


def recall_at_k(
    results: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
    corpus_by_id: Mapping[str, Mapping[str, Any]],
    ks: Sequence[int] = (1, 3, 5),
) -> dict[str, float]:
    """Fraction of records whose top-k passages contain a gold answer, as {"recall_at_<k>": value}.

    ``results`` are retrieve_split rows ({id, doc_ids, ...}) matched to ``records`` by id.
    A k deeper than what was retrieved is left out (with a warning): it would silently equal the
    recall at the retrieved depth.
    """
    if not records:
        raise ValueError("recall_at_k needs at least one record")
    by_id = {str(row["id"]): row["doc_ids"] for row in results}
    depth = max((len(ids) for ids in by_id.values()), default=0)
    usable = [k for k in ks if k <= depth]
    if len(usable) < len(ks):
        log.warning("recall at k=%s not computed: only %d passages were retrieved per question",
                    [k for k in ks if k > depth], depth)
    # Rank of the first passage holding an answer, per record (None: no hit in what was retrieved).
    first_hits: list[int | None] = []
    for record in records:
        doc_ids = by_id.get(str(record["id"]))
        if doc_ids is None:
            raise KeyError(f"no retrieval result for question id {record['id']!r}")
        first_hits.append(next((rank for rank, doc_id in enumerate(doc_ids)
                                if has_answer(corpus_by_id[doc_id]["contents"], record["golden_answers"])),
                               None))
    return {f"recall_at_{k}": sum(1 for hit in first_hits if hit is not None and hit < k) / len(records)
            for k in usable}


def recall_table(recalls: Mapping[str, Mapping[str, float]], ks: Sequence[int], title: str) -> str:
    """A markdown table: one row per retriever, one recall@k column per k."""
    rows = [[name, *(f"{recall[f'recall_at_{k}']:.3f}" for k in ks)] for name, recall in recalls.items()]
    lines = [title, "", *markdown_table(["retriever", *(f"recall@{k}" for k in ks)], rows)]
    return "\n".join(lines) + "\n"
