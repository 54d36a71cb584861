"""SelfAug (Huang et al., 2025): keep the logits on INPUT positions close to the starting model's."""

from __future__ import annotations

import torch

from ragforget.methods.base import LossTerm, StepTensors
from ragforget.methods.losses import KLDirection, masked_kl, prompt_positions


class InputKL(LossTerm):
    """alpha * mean over real prompt positions of KL(p0 || p) (or KL(p || p0) with ``reverse``)."""

    needs_reference = True

    def __init__(self, weight: float = 0.5, direction: KLDirection = "forward", chunk_size: int = 64) -> None:
        super().__init__(weight)
        self.direction = direction
        self.chunk_size = chunk_size

    def value(self, step: StepTensors) -> torch.Tensor:
        assert step.reference_logits is not None
        mask = prompt_positions(step.batch["labels"], step.batch["attention_mask"])
        return masked_kl(step.logits, step.reference_logits, mask, self.direction, self.chunk_size)
