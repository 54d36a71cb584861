"""Token ids, labels and masks for prompt/answer pairs.

Labels cover the answer tokens and the end-of-turn token only. Masks come from lengths, never from
the pad id: in SmolLM2 pad == eos == <|im_end|>, which also ends every answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from transformers import PreTrainedTokenizerBase

from ragforget.data.prompt import Message

IGNORE_INDEX = -100


@dataclass
class Encoded:
    """One tokenized example: prompt ids followed by answer ids."""

    prompt_ids: list[int]
    answer_ids: list[int]


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message],
                  chat_template: bool, plain_text: str) -> list[int]:
    """Prompt ids ending where the model should start answering."""
    if chat_template:
        ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)  # type: ignore[call-overload,index,arg-type]
    return cast(list[int], tokenizer(plain_text)["input_ids"])


def encode_example(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], answer: str,
                   chat_template: bool, plain_text: str) -> Encoded:
    """Split a full conversation into prompt ids and answer ids (answer + end-of-turn).

    With a chat template the answer ids are taken from the templated full conversation, so they
    carry exactly the end-of-turn marker the template uses; anything after the first eos (the
    template's trailing newline) is dropped, since generation stops at eos anyway.
    """
    prompt_ids = encode_prompt(tokenizer, messages, chat_template, plain_text)
    eos = tokenizer.eos_token_id
    if chat_template:
        full = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": answer}], tokenize=True
        )
        full_ids: list[int] = list(full["input_ids"] if hasattr(full, "keys") else full)  # type: ignore[call-overload,index,arg-type]
        if full_ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError("chat template renders the prompt differently with and without the answer; "
                             "set model.chat_template=false for this model")
        answer_ids = full_ids[len(prompt_ids):]
        if eos in answer_ids:
            answer_ids = answer_ids[: answer_ids.index(eos) + 1]
    else:
        answer_ids = cast(list[int], tokenizer(" " + answer, add_special_tokens=False)["input_ids"]) + [eos]
    return Encoded(prompt_ids=prompt_ids, answer_ids=answer_ids)


def collate_for_training(examples: Sequence[Encoded], pad_id: int, max_length: int | None = None
                         ) -> dict[str, torch.Tensor]:
    """Right-padded batch with labels on answer positions and attention_mask from lengths.

    If an example exceeds ``max_length`` its prompt is cut from the left (the question and the
    answer cue at the end of the prompt are what the answer depends on most); a target too long to
    leave the prompt half the window is cut from the right.
    """
    rows = []
    for ex in examples:
        prompt, answer = ex.prompt_ids, ex.answer_ids
        if max_length is not None and len(prompt) + len(answer) > max_length:
            # The prompt keeps up to half the window, so a long target (a general conversation)
            # loses its tail rather than leaving the model no request to answer.
            answer = answer[:max_length - min(len(prompt), max_length // 2)]
            prompt = prompt[max(len(prompt) + len(answer) - max_length, 0):]
        rows.append((prompt, answer))
    width = max(len(p) + len(a) for p, a in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, answer) in enumerate(rows):
        n_p, n = len(prompt), len(prompt) + len(answer)
        input_ids[i, :n] = torch.tensor(prompt + answer)
        labels[i, n_p:n] = torch.tensor(answer)
        attention[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def collate_prompts(prompts: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompt batch for generation (new tokens then line up at the right edge)."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        input_ids[i, width - len(prompt):] = torch.tensor(prompt)
        attention[i, width - len(prompt):] = 1
    return {"input_ids": input_ids, "attention_mask": attention}
