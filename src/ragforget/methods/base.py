"""The contract every training method follows.

A method never changes the training loop. It contributes:
- loss terms (added to the answer NLL), each a small ``LossTerm`` module,
- and in later extensions a data transform or an optimizer factory.
The loop computes reference logits only if some term asks for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ragforget.errors import ConfigError


@dataclass
class StepTensors:
    """What a loss term may read in one training step."""

    batch: Mapping[str, torch.Tensor]      # input_ids, attention_mask, labels: [B, T]
    logits: torch.Tensor                   # policy logits [B, T, V]
    reference_logits: torch.Tensor | None  # frozen-start logits [B, T, V], if any term needs them
    model: nn.Module


class LossTerm(nn.Module):
    """One weighted addend of the training loss. Subclasses implement ``value``."""

    needs_reference: bool = False

    def __init__(self, weight: float) -> None:
        super().__init__()
        if weight < 0:
            raise ConfigError(f"method.terms.<{type(self).__name__}>.weight",
                              f"must be >= 0, got {weight}")
        self.weight = float(weight)

    def value(self, step: StepTensors) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, step: StepTensors) -> torch.Tensor:
        return self.weight * self.value(step)


class Method:
    """A named bundle of loss terms; ``trains=False`` evaluates the starting model as is."""

    def __init__(self, name: str, terms: Mapping[str, LossTerm] | None = None, trains: bool = True) -> None:
        self.name = name
        self.terms = dict(terms or {})
        self.trains = trains
        for key, term in self.terms.items():
            if not isinstance(term, LossTerm):
                raise ConfigError(f"method.terms.{key}", f"is a {type(term).__name__}, not a LossTerm",
                                  "its _target_ must point to a LossTerm subclass")

    @property
    def needs_reference(self) -> bool:
        return any(term.needs_reference for term in self.terms.values())
