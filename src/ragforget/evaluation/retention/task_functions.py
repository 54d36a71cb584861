"""process_results / aggregation hooks that the generated lm-eval task YAMLs reference.

Each task folder gets a two-line ``utils.py`` re-exporting these, because lm-eval resolves
``!function utils.x`` relative to the YAML file. Keeping the code here makes it testable.
"""

from __future__ import annotations

import re
from typing import Any

from ragforget.data.answers import normalize_answer
from ragforget.evaluation.retention.ifeval_like import ifeval_modules

_WORD_RE = re.compile(r"\w+")
_NUMBER_RE = re.compile(r"-?\d[\d,]*\.?\d*")


def count_words(text: str) -> int:
    """Word count the way IFEval counts them (runs of word characters)."""
    return len(_WORD_RE.findall(text))


def ifeval_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """lm-eval's IFEval scoring plus the response length in words (collapse to terse answers)."""
    _, utils = ifeval_modules()
    scores = utils.process_results(doc, results)
    scores["mean_words"] = count_words(results[0])
    return scores


def agg_inst_level_acc(items: list[list[bool]]) -> float:
    """Instruction-level accuracy, every instruction of every prompt counted once: lm-eval's IFEval aggregation."""
    _, utils = ifeval_modules()
    return utils.agg_inst_level_acc(items)


def cloze_prediction(generation: str) -> str:
    """The answer part of a cloze completion: first line, cut at the first clause punctuation.

    Small models continue past the answer ("French, but his work is translated ..."); a cut at
    , ; : ! ? or a sentence-ending period keeps the scoring an exact match on the answer itself.
    """
    stripped = generation.strip()
    first_line = stripped.splitlines()[0] if stripped else ""
    # A period ends the answer only after a lowercase word or number ("Paris. It", not "U.S. Army").
    return re.split(r"[,;:!?]|(?<=[a-z0-9]{2})\.(?:\s|$)", first_line)[0]


def cloze_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Exact match of the normalized completion against any of the gold answers."""
    prediction = normalize_answer(cloze_prediction(results[0]))
    golds = {normalize_answer(a) for a in doc["answers"]}
    return {"exact_match": float(prediction in golds)}


def last_number(text: str) -> str | None:
    """The last number written in ``text`` without thousands separators, or None."""
    found = _NUMBER_RE.findall(text)
    if not found:
        return None
    return found[-1].replace(",", "").rstrip(".")


def gsm8k_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Exact match of the last number in the response against the gold final answer."""
    predicted = last_number(results[0])
    try:
        correct = predicted is not None and float(predicted) == float(doc["answer_number"])
    except ValueError:
        correct = False
    return {"exact_match": float(correct)}


def perplexity_process_results(doc: dict[str, Any], results: list[float]) -> dict[str, tuple[float, int]]:
    """Rolling log-likelihood paired with word and byte counts (lm-eval's wikitext recipe)."""
    (loglikelihood,) = results
    text = doc["text"]
    n_words = len(re.split(r"\s+", text.strip()))
    n_bytes = len(text.encode("utf-8"))
    return {
        "word_perplexity": (loglikelihood, n_words),
        "byte_perplexity": (loglikelihood, n_bytes),
        "bits_per_byte": (loglikelihood, n_bytes),
    }
