"""Oracle retrieval: gold exactly once among k, stable seeded positions, clear error without gold."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ragforget.errors import ConfigError
from ragforget.retrieval.bm25 import BM25Retriever
from ragforget.retrieval.oracle import OracleRetriever

TOPICS = ["planets", "tango", "honey", "ice", "glass", "jazz", "ferns", "eels", "chess", "bread"]
CORPUS = [{"id": f"p{i}", "title": t, "contents": f"{t}\nA short passage about {t} and related facts."}
          for i, t in enumerate(TOPICS)]
# Each question names its own gold topic, so BM25 retrieves the gold too: it must not appear twice.
RECORDS = [{"id": f"q{i}", "question": f"Tell me about {TOPICS[i % 10]}", "golden_answers": [TOPICS[i % 10]],
            "metadata": {"gold_passage_id": f"p{i % 10}"}} for i in range(30)]


@pytest.fixture
def oracle(tmp_path: Path) -> OracleRetriever:
    distractors = BM25Retriever()
    distractors.build_index(CORPUS, tmp_path)
    return OracleRetriever(distractors=distractors, seed=0)


def test_gold_exactly_once_and_k_total(oracle: OracleRetriever) -> None:
    for record, hits in zip(RECORDS, oracle.search_records(RECORDS, 4)):
        ids = [doc_id for doc_id, _ in hits]
        assert len(ids) == 4 and len(set(ids)) == 4
        assert ids.count(record["metadata"]["gold_passage_id"]) == 1
        assert [score for _, score in hits] == [4.0, 3.0, 2.0, 1.0]  # positional scores


def test_positions_are_seeded_per_question_and_vary(oracle: OracleRetriever) -> None:
    def positions(retriever: OracleRetriever, records: list[dict]) -> dict[str, int]:
        hits = retriever.search_records(records, 3)
        return {r["id"]: [d for d, _ in h].index(r["metadata"]["gold_passage_id"]) for r, h in zip(records, hits)}

    forward = positions(oracle, RECORDS)
    assert positions(oracle, RECORDS[::-1]) == forward  # independent of processing order
    assert set(Counter(forward.values())) == {0, 1, 2}  # not always the same slot
    reseeded = OracleRetriever(distractors=oracle.distractors, seed=1)
    assert positions(reseeded, RECORDS) != forward


def test_k_one_is_only_the_gold(oracle: OracleRetriever) -> None:
    assert oracle.search_records(RECORDS[:2], 1) == [[("p0", 1.0)], [("p1", 1.0)]]


def test_missing_gold_raises_config_error_naming_the_retriever(oracle: OracleRetriever) -> None:
    record = {"id": "nq-7", "question": "who?", "golden_answers": ["x"], "metadata": {"gold_passage_id": None}}
    with pytest.raises(ConfigError, match="retriever=oracle") as info:
        oracle.search_records([RECORDS[0], record], 3)
    assert info.value.key == "retriever"
    assert "no gold passages" in str(info.value) and "nq-7" in str(info.value)


def test_default_distractors_are_bm25_and_plain_search_is_refused() -> None:
    oracle = OracleRetriever()
    assert isinstance(oracle.distractors, BM25Retriever)
    assert oracle.dependencies() == [oracle.distractors]
    with pytest.raises(TypeError, match="search_records"):
        oracle.search(["a question"], 3)
