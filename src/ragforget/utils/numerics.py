"""Numerics on score and logit tensors shared by every layer that compares distributions.

The training losses (``methods.losses``), the invar retriever's losses and the distribution-shift
measure (``evaluation.shift``) all need the same two operations, so they live below all three.
"""

from __future__ import annotations

import torch


def upcast(x: torch.Tensor) -> torch.Tensor:
    """At least fp32 (bf16 softmaxes over 50k+ classes lose too much); fp64 stays fp64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def kl_rows(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) for each row of two [N, V] logit tensors, computed in at least fp32 (no gradient tricks)."""
    p_log = torch.log_softmax(upcast(p_logits), dim=-1)
    q_log = torch.log_softmax(upcast(q_logits), dim=-1)
    return (p_log.exp() * (p_log - q_log)).sum(-1)
