"""Sequence embeddings from a causal LM's last hidden states."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Pooling = Literal["last", "mean"]
POOLINGS = ("last", "mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: Pooling) -> torch.Tensor:
    """L2-normalized [B, H] embeddings of hidden [B, T, H] under attention_mask [B, T].

    ``last``: the hidden state of each row's last real token (a causal LM has read the whole text
    there), found from the mask so left and right padding both work. ``mean``: the average over
    real tokens.
    """
    mask = attention_mask.to(hidden.dtype)
    if how == "last":
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        last = (attention_mask.long() * positions).argmax(dim=1)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    elif how == "mean":
        pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
    else:
        raise ValueError(f"unknown pooling {how!r}; choose one of {POOLINGS}")
    return F.normalize(pooled.float(), dim=-1)
