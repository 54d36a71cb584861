"""A causal LM split into its two halves for losses: final hidden states and the LM head.

Training never asks the model for logits. A [batch, tokens, vocab] tensor is the largest thing in a
step (4 x 2048 tokens x 152k vocabulary is 5 GB in fp32), and the losses only need a few rows of it
at a time; they call the head on chunks of hidden-state rows instead (``methods.losses``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ragforget.errors import ConfigError


@dataclass(frozen=True)
class LinearHead:
    """The LM head as plain tensors: logits = softcap * tanh((hidden @ weight.T + bias) / softcap).

    ``softcap`` is Gemma 2/3's ``final_logit_softcapping`` (None for most models).
    """

    weight: torch.Tensor             # [V, H]
    bias: torch.Tensor | None = None  # [V]
    softcap: float | None = None

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of ``hidden`` rows [..., H] -> [..., V], in at least fp32."""
        logits = F.linear(hidden, self.weight, self.bias)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


@dataclass(frozen=True)
class FinalHidden:
    """What next-token logits are computed from: final hidden states [B, T, H] and the head."""

    hidden: torch.Tensor
    head: LinearHead


def linear_head(model: nn.Module) -> LinearHead:
    """The model's LM head; refuses a head wrapped by an adapter (its delta would be skipped)."""
    module = model.get_output_embeddings()  # type: ignore[operator]  # nn.Module types attributes as Tensor | Module
    if not isinstance(module, nn.Linear) or hasattr(module, "base_layer"):
        raise ConfigError("model.lora.target_modules",
                          f"the LM head is a {type(module).__name__}, not a plain linear layer",
                          "leave lm_head out of the LoRA targets (target_modules=all-linear already does)")
    if module.weight.dim() != 2:  # FSDP leaves each rank a flat shard outside the module's own forward
        raise ConfigError("trainer.strategy", f"the LM head's weight is sharded (shape {tuple(module.weight.shape)})",
                          "the chunked loss reads it whole: use trainer=ddp or trainer=deepspeed (ZeRO-2)")
    softcap = getattr(model.config, "final_logit_softcapping", None)
    return LinearHead(module.weight, module.bias, float(softcap) if softcap else None)


def final_hidden(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> FinalHidden:
    """Run the model's backbone only (adapters and activation checkpointing included)."""
    backbone = model.get_decoder()  # type: ignore[operator]
    out = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    return FinalHidden(out.last_hidden_state, linear_head(model))


@torch.no_grad()
def check_head(model: nn.Module, input_ids: torch.Tensor) -> None:
    """Fail unless backbone + head reproduce the model's own logits on ``input_ids`` [B, T].

    Guards architectures that transform the head's output in a way ``LinearHead`` does not know
    (a logit scale, say): training would otherwise optimize a different distribution.
    """
    was_training = model.training
    model.eval()
    try:
        batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        expected = model(**batch).logits.float()
        split = final_hidden(model, batch)
        got = split.head.logits(split.hidden)
    finally:
        model.train(was_training)
    error = (got - expected).abs().max().item()
    if error > 1e-2 * (1.0 + expected.abs().max().item()):
        raise ConfigError("model", f"{type(model).__name__}: backbone + LM head differ from the model's logits "
                          f"by {error:.3g}", "this architecture post-processes its logits in a way the "
                          "chunked loss path (ragforget.models.head.LinearHead) does not implement")
