"""Invar-RAG stage 1 on the tiny model: hard-negative mining, the loss terms, a few real training steps."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from ragforget.invar.data import RetrievalExample, retrieval_examples
from ragforget.invar.encoder import LLMEncoder
from ragforget.invar.module import InvarWeights, RetrieverFineTuner
from ragforget.invar.variants import DropStopwords, ResizeWindow
from ragforget.models.loading import attach_lora, load_model, load_tokenizer

CORPUS = {
    "p1": {"contents": "Frank Herbert wrote the novel Dune in 1965."},
    "p2": {"contents": "Dune is a desert planet in a science fiction story."},
    "p3": {"contents": "Paris is the capital of France."},
    "p4": {"contents": "The Seine flows through Paris."},
}


def test_mining_keeps_answerless_hits_as_negatives() -> None:
    records = [
        {"id": "q1", "question": "Who wrote Dune?", "golden_answers": ["Frank Herbert"],
         "metadata": {"gold_passage_id": "p1"}},
        # No gold id (as in NQ): the best hit containing the answer is the positive.
        {"id": "q2", "question": "What is the capital of France?", "golden_answers": ["Paris"]},
        {"id": "q3", "question": "Unanswerable?", "golden_answers": ["nowhere"]},  # no positive: skipped
    ]
    hits = {"q1": [("p2", 3.0), ("p1", 2.0), ("p3", 1.0)], "q2": [("p4", 2.0), ("p3", 1.5), ("p2", 1.0)],
            "q3": [("p3", 1.0), ("p4", 0.5)]}
    examples = retrieval_examples(records, hits, CORPUS, n_negatives=1)
    assert examples == [
        RetrievalExample("Who wrote Dune?", CORPUS["p1"]["contents"], (CORPUS["p2"]["contents"],)),
        # q2's positive is its best hit with the answer (p4); p3 also says "Paris", so it is no negative.
        RetrievalExample("What is the capital of France?", CORPUS["p4"]["contents"], (CORPUS["p2"]["contents"],)),
    ]


def overlap_teacher(queries: Sequence[str], passages: Sequence[str]) -> torch.Tensor:
    """A stand-in for MiniLM: word overlap between each query and passage."""
    return torch.tensor([[float(len(set(q.lower().split()) & set(p.lower().split()))) for p in passages]
                         for q in queries])


@pytest.fixture()
def encoder(tiny_model_path: str) -> LLMEncoder:
    model = attach_lora(load_model(tiny_model_path), {"r": 4, "alpha": 8, "target_modules": "all-linear"})
    return LLMEncoder(model, load_tokenizer(tiny_model_path), pooling="mean", max_length=32)


BATCH = [RetrievalExample("Who wrote Dune?", CORPUS["p1"]["contents"], (CORPUS["p2"]["contents"],)),
         RetrievalExample("Capital of France?", CORPUS["p3"]["contents"], (CORPUS["p4"]["contents"],))]


def test_each_term_can_be_switched_off(encoder: LLMEncoder) -> None:
    module = RetrieverFineTuner(encoder, InvarWeights(align=0.0, invariance=0.0), [], None, lr=1e-3)
    assert set(module.losses(BATCH)) == {"info_nce", "loss"}
    module = RetrieverFineTuner(encoder, InvarWeights(), [DropStopwords(), ResizeWindow(0.5)],
                                overlap_teacher, lr=1e-3)
    terms = module.losses(BATCH)
    assert set(terms) == {"info_nce", "align", "invariance", "loss"}
    assert terms["loss"].item() == pytest.approx(sum(terms[k].item() for k in ("info_nce", "align", "invariance")))
    with pytest.raises(ValueError, match="teacher"):
        RetrieverFineTuner(encoder, InvarWeights(align=1.0), [], None, lr=1e-3)


def test_training_moves_only_the_retriever_adapter(encoder: LLMEncoder) -> None:
    before = {n: p.detach().clone() for n, p in encoder.model.named_parameters()}
    module = RetrieverFineTuner(encoder, InvarWeights(), [DropStopwords(), ResizeWindow(0.5)],
                                overlap_teacher, lr=1e-2)
    loader = DataLoader(BATCH * 2, batch_size=2, collate_fn=list)
    L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(module, loader)
    after = dict(encoder.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed and all("lora_" in n for n in changed)
