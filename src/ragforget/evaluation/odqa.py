"""Open-domain QA evaluation: greedy answers to retrieval-augmented prompts, scored per question."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ragforget.data.rag_examples import RagExample, encode_for_generation
from ragforget.evaluation.metrics import score_prediction
from ragforget.models.generation import greedy_generate
from ragforget.utils.io import write_jsonl


def evaluate_odqa(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[RagExample],
                  chat_template: bool, batch_size: int, max_new_tokens: int,
                  predictions_path: Path | None = None) -> list[dict[str, Any]]:
    """Per question: its prediction and EM/F1/acc (also written to ``predictions_path``), in ``examples`` order."""
    prompts = [encode_for_generation(ex, tokenizer, chat_template) for ex in examples]
    predictions = greedy_generate(model, tokenizer, prompts, batch_size, max_new_tokens, desc="odqa")
    rows = []
    for example, prediction in zip(examples, predictions):
        scores = score_prediction(prediction, example.golden_answers)
        rows.append({"id": example.id, "prediction": prediction, "golden_answers": example.golden_answers,
                     "doc_ids": example.doc_ids, **scores})
    if predictions_path is not None:
        write_jsonl(predictions_path, rows)
    return rows
