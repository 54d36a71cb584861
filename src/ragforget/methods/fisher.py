"""Diagonal empirical Fisher: per weight, the mean over samples of the squared loss gradient."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch


@contextmanager
def gradients_enabled(params: Sequence[torch.Tensor]) -> Iterator[None]:
    """Let autograd reach ``params`` (e.g. LoRA's frozen base weights), restoring their flags after."""
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def diagonal_fisher(params: Sequence[torch.Tensor], sample_losses: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """F = (1/N) sum_n (d loss_n / d params)^2 in fp32, one backward per sample loss.

    The losses must be per SAMPLE: squaring a batch-mean gradient would let samples cancel and
    underestimate F. ``torch.autograd.grad`` computes only the gradients asked for and leaves every
    ``.grad`` untouched, so estimating F never disturbs an optimizer's state. Parameters the loss
    does not reach get a zero Fisher. ``params`` must require grad while the losses are formed.
    """
    sums = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    count = 0
    for loss in sample_losses:
        grads = torch.autograd.grad(loss, list(params), allow_unused=True)
        for total, grad in zip(sums, grads):
            if grad is not None:
                total.add_(grad.float().square())
        count += 1
    if count == 0:
        raise ValueError("no samples to estimate the Fisher from")
    return [total / count for total in sums]
