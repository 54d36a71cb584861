"""Variants of a (query, passage) pair for Invar-RAG's invariance loss.

Each variant keeps what should decide relevance (the query's content words, the passage's text) and
changes what should not (function words, clause order, how much of the passage window is shown).
A variant is a :class:`PairVariant`, a callable ``(query, passage, rng) -> (query, passage)``; configs
list them with ``_target_`` so users can add their own.
"""

from __future__ import annotations

import math
import random
import re
from typing import Protocol

# A short English function-word list: enough to drop what carries no topic, small enough to read.
STOPWORDS = frozenset("""
a an the of in on at to for from by with about as into over after before between under and or but
is are was were be been being do does did has have had what which who whom whose when where why how
that this these those it its there their they he she his her him we you your i me my our
""".split())
_CLAUSE_BREAK = re.compile(r"\s*(?:,|;|\band\b)\s*")


class PairVariant(Protocol):
    """What ``retriever.impl.stage1.variants`` builds: a change to a pair that should not change relevance."""

    def __call__(self, query: str, passage: str, rng: random.Random) -> tuple[str, str]:
        """The changed (query, passage); a side left as is comes back unchanged."""
        ...


class DropStopwords:
    """The query without function words ("who wrote the novel dune" -> "wrote novel dune")."""

    def __call__(self, query: str, passage: str, rng: random.Random) -> tuple[str, str]:
        kept = [word for word in query.split() if word.lower().strip("?,.!;:") not in STOPWORDS]
        return (" ".join(kept) if kept else query), passage


class ShuffleClauses:
    """The query's clauses (split at commas, semicolons and "and") in a random new order."""

    def __call__(self, query: str, passage: str, rng: random.Random) -> tuple[str, str]:
        clauses = [c for c in _CLAUSE_BREAK.split(query.strip().rstrip("?")) if c]
        if len(clauses) < 2:
            return query, passage
        order = list(range(len(clauses)))
        while order == sorted(order):  # a shuffle that changes nothing is no variant
            rng.shuffle(order)
        return ", ".join(clauses[i] for i in order) + ("?" if query.strip().endswith("?") else ""), passage


class ResizeWindow:
    """A contiguous window of ``fraction`` of the passage's words, at a random offset."""

    def __init__(self, fraction: float = 0.75) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.fraction = float(fraction)

    def __call__(self, query: str, passage: str, rng: random.Random) -> tuple[str, str]:
        words = passage.split()
        size = max(1, math.ceil(self.fraction * len(words)))
        start = rng.randint(0, len(words) - size) if len(words) > size else 0
        return query, " ".join(words[start:start + size])
