"""Orthogonal LoRA, inspired by O-LoRA (Wang et al., Findings of EMNLP 2023, arXiv 2310.14152).

O-LoRA keeps a new task's LoRA input subspace (the rows of A) orthogonal to the subspaces of
earlier tasks' adapters. Here the "earlier task" is the pretrained model itself: the update should
read input directions the base weight W barely uses, so it changes little of what W computes.
"""

from __future__ import annotations

import torch
from torch import nn

from ragforget.errors import require
from ragforget.methods.base import LossTerm, MethodContext, StepTensors
from ragforget.methods.deltas import LoraLayer, full_precision, lora_layers
from ragforget.utils.numerics import upcast


def base_energy_share(A: torch.Tensor, W: torch.Tensor, base_sq_norm: torch.Tensor | None = None) -> torch.Tensor:
    """||Â W^T||_F^2 / ||W||_F^2 with Â = A's rows scaled to unit norm; A [r, in], W [out, in].

    The share of W's energy along the update's r input directions, in [0, r] (each unit row adds
    at most sigma_max(W)^2 / ||W||_F^2 <= 1; r/in on average for random rows). Normalising the rows
    makes it blind to A's scale, so the optimizer cannot satisfy it by shrinking A while B grows.
    The product runs in W's dtype: casting the small Â beats an fp32 copy of a bf16 W every step.
    """
    a32 = upcast(A)
    unit = a32 / a32.norm(dim=1, keepdim=True).clamp_min(1e-12)
    projected = upcast(unit.to(W.dtype) @ W.T)  # [r, out]
    if base_sq_norm is None:
        base_sq_norm = upcast(W.detach()).square().sum()
    return projected.square().sum() / base_sq_norm


class OrthogonalLoRA(LossTerm):
    """weight * mean over adapted layers of ``base_energy_share(A, W)``; requires LoRA adapters."""

    def __init__(self, weight: float) -> None:
        super().__init__(weight)
        self._layers: list[LoraLayer] = []

    def setup(self, model: nn.Module, context: MethodContext) -> None:
        self._layers = lora_layers(model)
        require(bool(self._layers), "model.lora", "the orthogonal penalty needs LoRA adapters, and the model has none",
                "set model.lora (e.g. model.lora.r=8) or choose another method")
        # W is frozen under LoRA, so its norms are computed once; a buffer follows the term to the device.
        norms = torch.stack([upcast(layer.W.detach()).square().sum() for layer in self._layers])
        self.register_buffer("base_sq_norms", norms, persistent=False)

    def value(self, step: StepTensors) -> torch.Tensor:
        if not self._layers:
            raise RuntimeError("OrthogonalLoRA.value called before setup")
        with full_precision(step.device):
            shares = [base_energy_share(layer.A, layer.W, norm)
                      for layer, norm in zip(self._layers, self.base_sq_norms)]  # type: ignore[arg-type]
            return torch.stack(shares).mean()
