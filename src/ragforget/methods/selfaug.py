"""SelfAug (Huang et al., 2025): keep the logits on INPUT positions close to the starting model's."""

from __future__ import annotations

import torch

from ragforget.errors import require
from ragforget.methods.base import LossTerm, StepTensors
from ragforget.methods.losses import KLDirection, masked_kl, prompt_positions


class PositionKL(LossTerm):
    """weight * mean over selected positions of KL(p0 || p) (or KL(p || p0) with ``reverse``).

    Subclasses choose the positions; the KL machinery (chunked over rows, no [B, T, V] logits) is shared.
    """

    needs_reference = True

    def __init__(self, weight: float, direction: KLDirection) -> None:
        super().__init__(weight)
        require(direction in ("forward", "reverse"), "direction", f"must be 'forward' or 'reverse', got {direction!r}",
                relative=True)
        self.direction = direction

    def positions(self, step: StepTensors) -> torch.Tensor:
        raise NotImplementedError

    def value(self, step: StepTensors) -> torch.Tensor:
        assert step.reference is not None
        return masked_kl(step.policy, step.reference, self.positions(step), self.direction, step.chunk_rows)


class InputKL(PositionKL):
    """SelfAug: the KL over the real prompt (context) positions."""

    def positions(self, step: StepTensors) -> torch.Tensor:
        return prompt_positions(step.batch["labels"], step.batch["attention_mask"])
