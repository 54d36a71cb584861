"""Step 3 of self_synth: committee scores, parsed robustly, and the best candidate per instruction."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

SCORE_RANGE = (1.0, 5.0)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# "1 to 5", "1-5", "1 – 5": a judge repeating the rubric's scale, not giving a score.
_SCALE_ECHO = re.compile(r"^\s*\d+\s*(?:to|-|–)\s*\d+")


@dataclass(frozen=True)
class ParsedScore:
    """A judge's score, or None with the reason it is missing (``out_of_range`` or ``unparseable``)."""

    score: float | None
    status: str  # ok | out_of_range | unparseable


def parse_score(text: str, low: float = SCORE_RANGE[0], high: float = SCORE_RANGE[1]) -> ParsedScore:
    """The first number in the judge's reply, if it lies in [low, high].

    Replies look like " 4", "4/5", "**4** - clear and helpful" or "Score: 4" (a judge repeating the
    prefill); the first number is the score in all of them. "10/10" or "0" are out of range, and a
    reply without digits, or one that starts by repeating the scale ("1 to 5"), is unparseable:
    both count as missing, never as a guess.
    """
    if _SCALE_ECHO.match(text):
        return ParsedScore(None, "unparseable")
    match = _NUMBER.search(text)
    if match is None:
        return ParsedScore(None, "unparseable")
    value = float(match.group())
    if not low <= value <= high:
        return ParsedScore(None, "out_of_range")
    return ParsedScore(value, "ok")


@dataclass
class Candidate:
    """One committee member's response to one instruction, and the judges' scores of it."""

    instruction: int   # index into the kept instructions
    author: str        # committee member that wrote it
    sample: int        # which of the member's responses (0..L-1)
    text: str
    complete: bool     # ended its turn, or was trimmed back to its last full sentence
    truncated: bool = False  # hit the token cap before ending its turn
    scores: dict[str, float | None] = field(default_factory=dict)  # judge -> score (None: missing)

    @property
    def eligible(self) -> bool:
        """A complete, non-empty response; a cut-off one would teach the model to stop mid-sentence."""
        return self.complete and bool(self.text.strip())

    @property
    def mean_score(self) -> float | None:
        valid = [s for s in self.scores.values() if s is not None]
        return statistics.fmean(valid) if valid else None


@dataclass
class ResponseSelection:
    """The chosen candidate per kept instruction, and why the other instructions were dropped."""

    chosen: list[Candidate] = field(default_factory=list)
    no_complete_response: int = 0
    unscored: int = 0
    below_threshold: int = 0


def select_best(candidates: Sequence[Candidate], n_instructions: int, judged: bool,
                threshold: float | None) -> ResponseSelection:
    """Per instruction, the eligible candidate with the highest mean score (or the first, unjudged).

    Ties go to the earlier candidate in committee order, then sample order (the order of
    ``candidates``). Judged: an instruction whose candidates all lack a score is dropped as
    unscored, one whose best mean is under ``threshold`` as below threshold.
    """
    by_instruction: dict[int, list[Candidate]] = {i: [] for i in range(n_instructions)}
    for candidate in candidates:
        if candidate.eligible:
            by_instruction[candidate.instruction].append(candidate)
    selection = ResponseSelection()
    for index in range(n_instructions):
        eligible = by_instruction[index]
        if not eligible:
            selection.no_complete_response += 1
            continue
        if not judged:
            selection.chosen.append(eligible[0])
            continue
        scored = [c for c in eligible if c.mean_score is not None]
        if not scored:
            selection.unscored += 1
            continue
        best = max(scored, key=lambda c: c.mean_score or 0.0)  # max keeps the first of equal scores
        if threshold is not None and (best.mean_score or 0.0) < threshold:
            selection.below_threshold += 1
            continue
        selection.chosen.append(best)
    return selection

