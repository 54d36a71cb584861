"""Answer metrics against hand-worked values (SQuAD normalization, token F1, FlashRAG sub_em)."""

from __future__ import annotations

import pytest

from ragforget.data.answers import normalize_answer, substring_match
from ragforget.evaluation.metrics import METRIC_DEFINITIONS, METRICS, exact_match, f1_score, score_prediction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Beatles", "beatles"),
        ("U.S.A.", "usa"),
        ("  A   cat,  an apple;  THE end! ", "cat apple end"),
        ("theory", "theory"),            # articles only as whole words
        ("Anne and Thea", "anne and thea"),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match_ignores_articles_case_and_punctuation() -> None:
    assert exact_match("The Beatles", ["beatles"]) == 1.0
    assert exact_match("U.S.A.", ["USA"]) == 1.0
    assert exact_match("Beatles band", ["The Beatles"]) == 0.0


def test_exact_match_takes_any_gold() -> None:
    assert exact_match("Paris", ["London", "paris", "Rome"]) == 1.0
    assert exact_match("Berlin", ["London", "paris", "Rome"]) == 0.0
    assert exact_match("Paris", []) == 0.0


def test_f1_hand_worked_fraction() -> None:
    # pred tokens: [cat, sat, on, mat]; gold tokens: [cat, on, mat]; overlap 3
    # precision 3/4, recall 3/3 -> F1 = 2 * 3/4 * 1 / (3/4 + 1) = 6/7
    assert f1_score("the cat sat on mat", ["a cat on the mat"]) == pytest.approx(6 / 7, abs=1e-12)


def test_f1_counts_repeated_tokens_as_a_bag() -> None:
    # pred [new, new, york]; gold [new, york]: overlap min(2,1)+1 = 2 -> p=2/3, r=1 -> F1 = 4/5
    assert f1_score("new new york", ["New York"]) == pytest.approx(4 / 5, abs=1e-12)


def test_f1_takes_max_over_golds() -> None:
    # vs "cat": p=1/2, r=1 -> 2/3; vs "black cat": exact -> 1
    assert f1_score("black cat", ["cat", "black cat"]) == 1.0
    # vs "cat": 2/3; vs "dog": 0 -> max 2/3
    assert f1_score("black cat", ["dog", "cat"]) == pytest.approx(2 / 3, abs=1e-12)


def test_f1_disjoint_is_zero() -> None:
    assert f1_score("blue whale", ["red fox"]) == 0.0


def test_empty_prediction_scores_zero() -> None:
    scores = score_prediction("", ["The Beatles"])
    assert scores == {"em": 0.0, "f1": 0.0, "acc": 0.0}


def test_prediction_of_only_articles_scores_zero() -> None:
    assert score_prediction("The.", ["Beatles"]) == {"em": 0.0, "f1": 0.0, "acc": 0.0}


def test_substring_match_gold_inside_longer_prediction() -> None:
    prediction = "I think it was the Beatles, in 1963."
    assert substring_match(prediction, ["The Beatles"]) == 1.0
    assert exact_match(prediction, ["The Beatles"]) == 0.0
    # pred tokens [i, think, it, was, beatles, in, 1963] (7), gold [beatles]: p=1/7, r=1 -> 2/8
    assert f1_score(prediction, ["The Beatles"]) == pytest.approx(1 / 4, abs=1e-12)


def test_substring_match_is_not_symmetric() -> None:
    # the prediction inside the gold answer is not a hit
    assert substring_match("Beatles", ["The Beatles Anthology"]) == 0.0


def test_substring_match_ignores_empty_golds() -> None:
    # a gold that normalizes to "" would otherwise be a substring of everything
    assert substring_match("anything", ["", "the", "a."]) == 0.0
    assert substring_match("anything at all", ["", "at all"]) == 1.0


def test_score_prediction_combines_all_metrics() -> None:
    scores = score_prediction("the cat sat on mat", ["a cat on the mat", "dog"])
    assert set(scores) == {"em", "f1", "acc"} == set(METRICS) == set(METRIC_DEFINITIONS)
    assert scores["em"] == 0.0
    assert scores["f1"] == pytest.approx(6 / 7, abs=1e-12)
    assert scores["acc"] == 0.0   # "cat on mat" is not a substring of "cat sat on mat"


def test_score_prediction_exact_answer() -> None:
    assert score_prediction("U.S.A.", ["usa"]) == {"em": 1.0, "f1": 1.0, "acc": 1.0}
