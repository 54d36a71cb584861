"""A generator for self_synth tests: the tiny model's real (seeded) sampling, mapped to well-formed text.

A random model never ends its turn, so every instruction it samples would be dropped as truncated.
This keeps its real generation (so RNG use, batching and resume behave as with a real model) and
turns each output into a finished instruction, response or score reply that depends on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ragforget.models.generation import Generation, Sampling, generate_batch


def scripted_generate(model: Any, tokenizer: Any, prompts: Sequence[list[int]], max_new_tokens: int,
                      sampling: Sampling | None, stop_ids: Sequence[int]) -> list[Generation]:
    outputs = generate_batch(model, tokenizer, prompts, min(max_new_tokens, 6), sampling, stop_ids)
    if sampling is None:  # a judge (greedy): a score, an out-of-range number or garbage
        replies = {0: " 4", 1: " 5/5", 2: " 2", 3: " great", 4: " 9"}
        # Greedy replies of a random model hardly differ, so the prompt (the candidate) picks the reply.
        return [Generation(replies[(sum(p) + len(o.text)) % 5], True) for p, o in zip(prompts, outputs)]
    return [Generation(f"Explain {o.text[:24].strip() or 'this'} to me.", True) for o in outputs]
