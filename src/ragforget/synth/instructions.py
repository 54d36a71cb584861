"""Step 1 of self_synth: reconstruct the instruction distribution from the chat template's prefix.

MAGPIE-style "pre-query" sampling: an instruct model given only the text its chat template puts
before a user message (system prompt included, if the template adds one) writes a plausible user
request, and ends it with the template's end-of-turn token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from ragforget.data.answers import normalize_answer
from ragforget.errors import ConfigError
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

# Stands in for the user's words when rendering the template; plain letters, so no template escapes
# or strips it.
SENTINEL = "RAGFORGETUSERTURNSENTINEL"


def _render_user_turn(tokenizer: PreTrainedTokenizerBase, key: str) -> tuple[str, str]:
    """The template's text before and after a user message."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(key, "the model's tokenizer has no chat template",
                          "instruction reconstruction needs an instruct (chat) model")
    text = tokenizer.apply_chat_template([{"role": "user", "content": SENTINEL}], tokenize=False,
                                         add_generation_prompt=False)
    if not isinstance(text, str) or text.count(SENTINEL) != 1:
        raise ConfigError(key, "the chat template does not render a user message verbatim",
                          "use a model whose template places the user's text as is")
    before, after = text.split(SENTINEL)
    return before, after


def pre_query_prefix(tokenizer: PreTrainedTokenizerBase, key: str = "model.chat_template") -> str:
    """The template's text up to where a user's message begins, e.g. ``...<|im_start|>user\\n``."""
    return _render_user_turn(tokenizer, key)[0]


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase, key: str = "model.chat_template") -> list[int]:
    """The template's end-of-turn token (what follows a user's message), so generation stops there.

    Empty when the marker is not a single token: generation then stops only at the eos.
    """
    marker = _render_user_turn(tokenizer, key)[1].strip()
    ids = tokenizer(marker, add_special_tokens=False)["input_ids"] if marker else []
    if len(ids) != 1:
        log.warning("chat template's end-of-turn %r is not one token: generation stops only at eos", marker)
        return []
    return list(ids)


def pre_query_ids(tokenizer: PreTrainedTokenizerBase, key: str = "model.chat_template") -> list[int]:
    """Token ids of :func:`pre_query_prefix`; the template already holds any bos it wants."""
    return list(tokenizer(pre_query_prefix(tokenizer, key), add_special_tokens=False)["input_ids"])


@dataclass
class CleanedInstructions:
    """The kept instructions (first occurrence order) and why the others were dropped."""

    kept: list[str] = field(default_factory=list)
    sampled: int = 0
    dropped_empty: int = 0
    dropped_truncated: int = 0
    dropped_duplicate: int = 0

    @property
    def dedup_rate(self) -> float:
        """Share of the complete, non-empty samples that repeated an earlier one."""
        complete = self.sampled - self.dropped_empty - self.dropped_truncated
        return self.dropped_duplicate / complete if complete else 0.0


def clean_instructions(samples: Sequence[Mapping[str, Any]]) -> CleanedInstructions:
    """Drop empty, truncated (no end-of-turn before the token cap) and duplicate samples.

    Duplicates are compared after SQuAD normalization (case, punctuation, articles, whitespace),
    which also catches the near-duplicates that differ only in those.
    """
    result = CleanedInstructions(sampled=len(samples))
    seen: set[str] = set()
    for sample in samples:
        text = str(sample["text"]).strip()
        normalized = normalize_answer(text)
        if not normalized:
            result.dropped_empty += 1
        elif not sample["finished"]:
            result.dropped_truncated += 1
        elif normalized in seen:
            result.dropped_duplicate += 1
        else:
            seen.add(normalized)
            result.kept.append(text)
    return result
