"""Batched generation from prompt ids: greedy (evaluation, sdft) or sampled (data synthesis)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ragforget.data.encoding import collate_prompts


@dataclass(frozen=True)
class Sampling:
    """Nucleus sampling settings; generation is greedy where none are given."""

    temperature: float = 1.0
    top_p: float = 1.0


@dataclass(frozen=True)
class Generation:
    """One continuation: its text (special tokens dropped) and whether a stop token ended it."""

    text: str
    finished: bool


@torch.no_grad()
def generate_batch(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[list[int]],
                   max_new_tokens: int, sampling: Sampling | None = None,
                   stop_ids: Sequence[int] = ()) -> list[Generation]:
    """Continuations of one left-padded batch of ``prompts``.

    Generation stops at the tokenizer's eos or any of ``stop_ids`` (e.g. a chat template's
    end-of-turn token when it is not the eos). A continuation that hit ``max_new_tokens`` first is
    ``finished=False``: callers that need whole texts drop it.
    """
    model.eval()
    device = next(model.parameters()).device
    stops = sorted({tokenizer.eos_token_id, *stop_ids} - {None})
    batch = {k: v.to(device) for k, v in collate_prompts(list(prompts), tokenizer.pad_token_id).items()}
    options = ({"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
               if sampling is not None else {"do_sample": False})
    generated = model.generate(  # type: ignore[operator]  # a transformers model's method
        **batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=stops, **options)
    new_tokens = generated[:, batch["input_ids"].shape[1]:]
    finished = torch.isin(new_tokens, torch.tensor(stops, device=new_tokens.device)).any(dim=1)
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [Generation(text.strip(), bool(done)) for text, done in zip(texts, finished.tolist())]


def greedy_generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[list[int]],
                    batch_size: int, max_new_tokens: int, desc: str = "generate") -> list[str]:
    """The texts of ``greedy_generations`` (a text cut at ``max_new_tokens`` is kept as it is)."""
    return [generation.text for generation in greedy_generations(model, tokenizer, prompts, batch_size,
                                                                 max_new_tokens, desc)]


def greedy_generations(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[list[int]],
                       batch_size: int, max_new_tokens: int, desc: str = "generate") -> list[Generation]:
    """Greedy continuations of ``prompts``, decoded without special tokens, with their ``finished`` flags.

    Prompts are sorted by length so each left-padded batch wastes little compute; results come back
    in the original order.
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs = [Generation("", False)] * len(prompts)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        idx = order[start:start + batch_size]
        for i, generation in zip(idx, generate_batch(model, tokenizer, [prompts[i] for i in idx], max_new_tokens)):
            outputs[i] = generation
    return outputs
