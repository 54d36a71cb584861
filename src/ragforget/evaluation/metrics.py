"""Answer metrics (pure functions). Definitions follow the SQuAD script and FlashRAG's sub_em.

- normalize: lowercase, strip punctuation, drop articles a/an/the, collapse whitespace
  (``data.answers``, shared with retrieval recall and the methods that check answers).
- em:  normalized prediction equals any normalized gold answer.
- f1:  token-bag F1, max over gold answers.
- acc: any normalized gold answer is a substring of the normalized prediction (FlashRAG sub_em).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ragforget.data.answers import normalize_answer, substring_match


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals a normalized gold answer."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(gold) for gold in golds))


def _f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if not prediction_tokens or not gold_tokens:
        return float(prediction_tokens == gold_tokens)
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """Token-bag F1 of the normalized strings, max over gold answers."""
    pred_tokens = normalize_answer(prediction).split()
    return max((_f1(pred_tokens, normalize_answer(gold).split()) for gold in golds), default=0.0)


METRICS = {"em": exact_match, "f1": f1_score, "acc": substring_match}
METRIC_DEFINITIONS = {
    "em": "SQuAD-normalized exact match, max over gold answers",
    "f1": "SQuAD-normalized token F1, max over gold answers",
    "acc": "SQuAD-normalized gold answer is a substring of the prediction (FlashRAG sub_em)",
}


def score_prediction(prediction: str, golds: Sequence[str]) -> dict[str, float]:
    """All answer metrics for one prediction."""
    return {name: fn(prediction, golds) for name, fn in METRICS.items()}
