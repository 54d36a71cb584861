"""Stage 1 of Invar-RAG as a LightningModule: InfoNCE + alignment to a small encoder + invariance."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import lightning as L
import torch

from ragforget.invar.data import RetrievalExample
from ragforget.invar.encoder import LLMEncoder
from ragforget.invar.losses import alignment_kl, info_nce, invariance_kl
from ragforget.invar.variants import PairVariant

# (queries, passages) -> [Q, P] teacher similarity scores, without gradients.
Teacher = Callable[[Sequence[str], Sequence[str]], torch.Tensor]


@dataclass(frozen=True)
class InvarWeights:
    """Every weight and temperature of the stage-1 loss; a weight of 0 switches its term off."""

    tau: float = 0.05           # InfoNCE and the LLM's score distributions
    align: float = 1.0          # lambda_align
    teacher_tau: float = 0.05   # the small encoder's score distribution
    invariance: float = 0.5     # lambda_inv


class RetrieverFineTuner(L.LightningModule):
    """Trains the retriever adapter; candidates are all passages of the batch (in-batch negatives)."""

    def __init__(self, encoder: LLMEncoder, weights: InvarWeights, variants: Sequence[PairVariant],
                 teacher: Teacher | None, lr: float, seed: int = 0) -> None:
        super().__init__()
        if weights.align > 0 and teacher is None:
            raise ValueError("the alignment term needs a teacher encoder (or align weight 0)")
        if weights.invariance > 0 and not variants:
            raise ValueError("the invariance term needs at least one variant (or invariance weight 0)")
        self.encoder = encoder
        self.model = encoder.model  # registered, so Lightning moves it and checkpoints its adapter
        self.weights = weights
        self.variants = list(variants)
        self.teacher = teacher
        self.lr = lr
        self.rng = random.Random(seed)

    def losses(self, batch: Sequence[RetrievalExample]) -> dict[str, torch.Tensor]:
        """Each weighted term and their sum (``loss``), for one batch."""
        w = self.weights
        queries = [ex.query for ex in batch]
        passages = [p for ex in batch for p in (ex.positive, *ex.negatives)]
        positives = torch.arange(len(batch), device=self.device) * (1 + len(batch[0].negatives))
        query_emb, passage_emb = self.encoder.queries(queries), self.encoder.passages(passages)
        scores = query_emb @ passage_emb.T
        terms = {"info_nce": info_nce(scores, positives, w.tau)}
        if w.align > 0:
            assert self.teacher is not None
            teacher_scores = self.teacher(queries, passages).to(scores.device)
            terms["align"] = w.align * alignment_kl(teacher_scores, scores, w.tau, w.teacher_tau)
        if w.invariance > 0:
            variant_scores = torch.stack([self.variant_scores(v, queries, passages, query_emb, passage_emb)
                                          for v in self.variants])
            terms["invariance"] = w.invariance * invariance_kl(scores, variant_scores, w.tau)
        terms["loss"] = torch.stack(list(terms.values())).sum()
        return terms

    def variant_scores(self, variant: PairVariant, queries: list[str], passages: list[str],
                       query_emb: torch.Tensor, passage_emb: torch.Tensor) -> torch.Tensor:
        """[Q, P] scores with the variant applied; unchanged sides reuse their embeddings."""
        new_queries = [variant(q, "", self.rng)[0] for q in queries]
        new_passages = [variant("", p, self.rng)[1] for p in passages]
        q = query_emb if new_queries == queries else self.encoder.queries(new_queries)
        p = passage_emb if new_passages == passages else self.encoder.passages(new_passages)
        return q @ p.T

    def on_train_start(self) -> None:
        self.model.train()  # loaded in eval mode, and encode() leaves it there

    def transfer_batch_to_device(self, batch: Sequence[RetrievalExample], device: torch.device,
                                 dataloader_idx: int) -> Sequence[RetrievalExample]:
        return batch  # text: the encoder tokenizes onto the model's device

    def training_step(self, batch: Sequence[RetrievalExample], batch_idx: int) -> torch.Tensor:
        terms = self.losses(batch)
        for name, value in terms.items():
            self.log(f"retriever/{name}", value.detach(), batch_size=len(batch))
        return terms["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=self.lr)
