"""The frozen starting model's final hidden states and LM head, for KL terms.

With LoRA the reference is the same module with adapters disabled (bit-exact base outputs, no second
copy in memory). For full fine-tuning it is a frozen copy made once before training.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from ragforget.models.head import FinalHidden, final_hidden
from ragforget.models.loading import has_adapters


class ReferenceModel(nn.Module):
    """Computes the reference's hidden states under no_grad with dropout off.

    The frozen copy (full fine-tuning only) is a registered submodule so it follows the policy to
    the accelerator; the policy itself is held outside the module tree to avoid registering it twice.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._policy = [model]
        self.frozen: nn.Module | None = None
        if not has_adapters(model):
            self.frozen = copy.deepcopy(model)
            self.frozen.requires_grad_(False)

    @torch.no_grad()
    def outputs(self, batch: Mapping[str, torch.Tensor]) -> FinalHidden:
        if self.frozen is not None:
            self.frozen.eval()  # Lightning switches every submodule to train mode at fit start
            return final_hidden(self.frozen, batch)
        policy = self._policy[0]
        was_training = policy.training
        policy.eval()  # dropout off: the reference must be deterministic
        try:
            with policy.disable_adapter():  # type: ignore[operator]  # a PeftModel method
                return final_hidden(policy, batch)
        finally:
            policy.train(was_training)
