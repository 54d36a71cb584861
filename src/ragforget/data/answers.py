"""How answers are compared to text: SQuAD normalization, and whether a gold answer occurs in a text.

One definition for every stage that asks "is this the answer?": the ODQA metrics
(``evaluation.metrics``), retrieval recall, SDFT's check of its rewrites, Invar-RAG's positive and
negative passages and the synthesizer's instruction cleaning.
- normalize: lowercase, strip punctuation, drop articles a/an/the, collapse whitespace.
- substring match: any normalized gold answer is a substring of the normalized text (FlashRAG sub_em).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalization (also used for retrieval recall, so both count answers alike)."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def substring_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if a normalized gold answer occurs in the normalized prediction (FlashRAG's acc)."""
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(gold) in pred for gold in golds if normalize_answer(gold)))
