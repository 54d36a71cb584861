"""Join QA records with their retrieved passages into prompt/answer examples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from ragforget.data.encoding import Encoded, encode_example, encode_prompt
from ragforget.data.prompt import Message, RagPrompt


@dataclass
class RagExample:
    """One question with its prompt, gold answers and the passages shown to the model."""

    id: str
    messages: list[Message]
    plain_text: str
    golden_answers: list[str]
    doc_ids: list[str]


def build_examples(records: Sequence[Mapping[str, Any]], retrieved: Mapping[str, Sequence[str]],
                   corpus_by_id: Mapping[str, Mapping[str, Any]], prompt: RagPrompt,
                   tokenizer: PreTrainedTokenizerBase) -> list[RagExample]:
    """Prompts for every record; ``retrieved`` maps question id to its ranked passage ids."""
    examples = []
    for record in records:
        doc_ids = list(retrieved.get(record["id"], []))
        passages = [corpus_by_id[doc_id] for doc_id in doc_ids]
        messages = prompt.messages(record["question"], passages, tokenizer)
        examples.append(RagExample(
            id=record["id"],
            messages=messages,
            plain_text=prompt.plain_text(messages),
            golden_answers=list(record["golden_answers"]),
            doc_ids=doc_ids,
        ))
    return examples


@dataclass
class TrainingExample:
    """One prompt/target pair as training sees it: a RAG question, or a general conversation mixed in.

    ``golden_answers`` lets data transforms check a rewritten target (empty for general data).
    """

    id: str
    messages: list[Message]
    plain_text: str
    target: str
    golden_answers: list[str] = field(default_factory=list)
    source: str = "rag"


def as_training_example(example: RagExample) -> TrainingExample:
    """A RAG example trained on its first gold answer."""
    return TrainingExample(id=example.id, messages=example.messages, plain_text=example.plain_text,
                           target=example.golden_answers[0], golden_answers=list(example.golden_answers))


def encode_for_training(example: TrainingExample, tokenizer: PreTrainedTokenizerBase,
                        chat_template: bool) -> Encoded:
    """Prompt ids and target ids (target + end-of-turn)."""
    return encode_example(tokenizer, example.messages, example.target, chat_template, example.plain_text)


def encode_for_generation(example: RagExample, tokenizer: PreTrainedTokenizerBase,
                          chat_template: bool) -> list[int]:
    """Prompt ids only, for greedy answering."""
    return encode_prompt(tokenizer, example.messages, chat_template, example.plain_text)
