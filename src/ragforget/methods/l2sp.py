"""L2-SP (Li et al., ICML 2018): pull the weights towards the starting point, not towards zero."""

from __future__ import annotations

import torch
from torch import nn

from ragforget.methods.base import LossTerm, MethodContext, StepTensors
from ragforget.methods.deltas import LoraLayer, ParameterSnapshot, full_precision, lora_layers
from ragforget.utils.numerics import upcast


class L2SP(LossTerm):
    """weight * 0.5 * sum over tensors of ||delta W||_F^2, so weight = alpha gives METHODS.md's
    (alpha/2) ||theta - theta0||^2 exactly.

    With LoRA the delta of each adapted layer is its effective update s * B @ A, whose norm comes
    from the r x r identity (no [out, in] product is formed); in full fine-tuning it is
    theta - theta0 over every trainable tensor.
    """

    def __init__(self, weight: float) -> None:
        super().__init__(weight)
        self._layers: list[LoraLayer] = []
        self.snapshot: ParameterSnapshot | None = None

    def setup(self, model: nn.Module, context: MethodContext) -> None:
        self._layers = lora_layers(model)
        self.snapshot = None if self._layers else ParameterSnapshot(model)

    def value(self, step: StepTensors) -> torch.Tensor:
        if self.snapshot is None and not self._layers:
            raise RuntimeError("L2SP.value called before setup")
        with full_precision(step.device):
            if self.snapshot is not None:
                squares = [upcast(delta).square().sum() for _, delta in self.snapshot.deltas()]
            else:
                squares = [layer.squared_delta_norm() for layer in self._layers]
            return 0.5 * torch.stack(squares).sum()
