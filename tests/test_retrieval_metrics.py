"""Answer normalization, has_answer and recall@k on hand-made cases."""

from __future__ import annotations

import pytest

from ragforget.data.answers import normalize_answer
from ragforget.retrieval.metrics import has_answer, recall_at_k


def test_normalize_answer_lowercases_strips_punctuation_articles_and_spaces() -> None:
    assert normalize_answer("  The Quick, brown  fox!  ") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("U.S.") == "us"
    # "a" inside a word is not an article.
    assert normalize_answer("Aardvark and Theatre") == "aardvark and theatre"


@pytest.mark.parametrize(
    ("passage", "answers", "expected"),
    [
        ("It was designed by the Eiffel company.", ["Eiffel"], True),
        ("Paris is a city in France", ["the city"], True),  # articles dropped on both sides
        ("He was born in the U.S. in 1990.", ["US"], True),  # punctuation dropped
        ("He started the engine.", ["art"], False),  # token boundary: no match inside "started"
        ("Modern art, mostly.", ["Art"], True),
        ("Denver Broncos won.", ["Carolina", "denver broncos"], True),  # any of several answers
        ("Nothing relevant here.", ["The"], False),  # an answer that normalizes to "" never matches
        ("Nothing relevant here.", [], False),
    ],
)
def test_has_answer(passage: str, answers: list[str], expected: bool) -> None:
    assert has_answer(passage, answers) is expected


def test_recall_at_k_counts_first_answer_rank() -> None:
    corpus = {
        "p1": {"contents": "Title\nThe capital of France is Paris."},
        "p2": {"contents": "Title\nBerlin is in Germany."},
        "p3": {"contents": "Title\nRome is old."},
    }
    records = [
        {"id": "q1", "golden_answers": ["Paris"]},  # answer at rank 1
        {"id": "q2", "golden_answers": ["Rome"]},  # answer at rank 3
        {"id": "q3", "golden_answers": ["Madrid"]},  # never
    ]
    results = [
        {"id": "q3", "doc_ids": ["p1", "p2", "p3"]},  # matched by id, not by position
        {"id": "q1", "doc_ids": ["p1", "p2", "p3"]},
        {"id": "q2", "doc_ids": ["p2", "p1", "p3"]},
    ]
    scores = recall_at_k(results, records, corpus, ks=(1, 2, 3))
    assert scores == pytest.approx({"recall_at_1": 1 / 3, "recall_at_2": 1 / 3, "recall_at_3": 2 / 3})


def test_recall_at_k_skips_depths_beyond_what_was_retrieved() -> None:
    corpus = {"p1": {"contents": "Paris"}}
    scores = recall_at_k([{"id": "q", "doc_ids": ["p1"]}], [{"id": "q", "golden_answers": ["paris"]}], corpus,
                         ks=(1, 5))
    assert scores == {"recall_at_1": 1.0}


def test_recall_at_k_missing_result_names_the_question() -> None:
    with pytest.raises(KeyError, match="q9"):
        recall_at_k([], [{"id": "q9", "golden_answers": ["x"]}], {}, ks=(1,))


def test_recall_table_has_a_row_per_retriever() -> None:
    from ragforget.retrieval.metrics import recall_table

    text = recall_table({"bm25": {"recall_at_1": 0.5, "recall_at_3": 0.75}, "invar": {"recall_at_1": 0.25,
                                                                                       "recall_at_3": 0.5}},
                        [1, 3], "title")
    assert text.splitlines()[2:] == ["| retriever | recall@1 | recall@3 |", "|---|---:|---:|",
                                     "| bm25 | 0.500 | 0.750 |", "| invar | 0.250 | 0.500 |"]
