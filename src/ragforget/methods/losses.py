"""Pure loss functions over final hidden states and the LM head, computed chunk by chunk.

Shapes: B batch, T sequence, H hidden, V vocabulary, N selected positions, C rows per chunk.
No [B, T, V] (or [N, V]) logit tensor is ever formed: each chunk of C selected rows goes through the
head, its loss and the gradient of that loss are computed at once, and only the gradients with
respect to the hidden rows [N, H] and the head's weight [V, H] are kept for backward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from ragforget.data.encoding import IGNORE_INDEX
from ragforget.models.head import FinalHidden, LinearHead
from ragforget.utils.numerics import upcast

KLDirection = Literal["forward", "reverse"]

# (fp32 logits of a chunk [C, V], the chunk's row indices [C]) -> (sum of the rows' losses, d sum / d logits)
RowLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class _ChunkedHeadLoss(torch.autograd.Function):
    """Mean over selected rows of a row loss of the head's logits, with its gradient formed in forward.

    Autograd would keep every chunk's [C, V] logits and softmaxes alive until backward. Here each
    chunk's [C, V] tensors live only inside the loop; what survives is d loss / d hidden [M, H]
    (hidden-sized) and, when the head trains (full fine-tuning), d loss / d weight [V, H] in fp32.
    With logits z = s * tanh(u / s) of the head's output u (softcap s), d z / d u = 1 - (z / s)^2.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, softcap: float | None, rows: torch.Tensor, row_loss: RowLoss,
                chunk_rows: int) -> torch.Tensor:
        needs = ctx.needs_input_grad
        grad_hidden = torch.zeros_like(hidden) if needs[0] else None
        grad_weight = upcast(torch.zeros_like(weight)) if needs[1] else None
        grad_bias = upcast(torch.zeros_like(bias)) if bias is not None and needs[2] else None
        head = LinearHead(weight, bias, softcap)
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
        count = rows.numel()
        for start in range(0, count, chunk_rows):
            idx = rows[start:start + chunk_rows]
            h = hidden[idx]
            logits = head.logits(h)
            value, grad = row_loss(logits, idx)
            total += value.double()
            if softcap:
                grad.mul_(1 - (logits / softcap).square())
            del logits
            grad.div_(count)
            if grad_hidden is not None:
                grad_hidden[idx] = (grad.to(weight.dtype) @ weight).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight.addmm_(grad.T.to(grad_weight.dtype), upcast(h))
            if grad_bias is not None:
                grad_bias += grad.sum(0).to(grad_bias.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return (total / count).to(torch.promote_types(hidden.dtype, torch.float32))

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor
                 ) -> tuple[torch.Tensor | None, ...]:
        grads = [None if g is None else g * grad_out.to(g.dtype) for g in ctx.saved_tensors]
        grads = [None if g is None else g.to(dtype) for g, dtype in zip(grads, ctx.dtypes)]
        return (*grads, None, None, None, None)


def chunked_head_loss(source: FinalHidden, mask: torch.Tensor, row_loss: RowLoss, chunk_rows: int) -> torch.Tensor:
    """Mean of ``row_loss`` over the positions of ``mask`` [B, T]; 0 (with a graph) when none is selected."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    flat = source.hidden.reshape(-1, source.hidden.shape[-1])
    rows = mask.reshape(-1).nonzero().squeeze(-1)
    if rows.numel() == 0:
        return flat.sum() * 0.0
    head = source.head
    return _ChunkedHeadLoss.apply(flat, head.weight, head.bias, head.softcap, rows, row_loss, chunk_rows)


def nll_rows(targets: torch.Tensor) -> RowLoss:
    """Cross-entropy of each row against ``targets`` [M] (indexed like the flat hidden rows)."""

    def loss(logits: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = targets[idx]
        log_z = torch.logsumexp(logits, dim=-1)
        value = (log_z - logits.gather(1, target[:, None]).squeeze(1)).sum()
        grad = torch.softmax(logits, dim=-1)  # d CE / d logits = softmax - one_hot
        grad[torch.arange(len(idx), device=grad.device), target] -= 1
        return value, grad

    return loss


def kl_rows_against(reference: FinalHidden, direction: KLDirection) -> RowLoss:
    """KL between the reference's and the policy's next-token distributions of each row.

    ``forward`` is KL(p0 || p) (reference first), ``reverse`` is KL(p || p0). Gradients w.r.t. the
    policy logits z of one row:  forward: p - p0;  reverse: p * (log p - log p0 - KL_row).
    """
    ref_flat = reference.hidden.reshape(-1, reference.hidden.shape[-1])

    def loss(logits: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_p = torch.log_softmax(logits, dim=-1)
        log_r = torch.log_softmax(reference.head.logits(ref_flat[idx].detach()), dim=-1)
        if direction == "forward":
            r = log_r.exp()
            diff = log_r.sub_(log_p)                       # log p0 - log p, in place
            value = torch.dot(r.reshape(-1), diff.reshape(-1))
            return value, log_p.exp_().sub_(r)             # p - p0, in place
        p = log_p.exp()
        diff = log_p.sub_(log_r)                           # log p - log p0, in place
        kl = (p * diff).sum(-1, keepdim=True)
        return kl.sum(), diff.sub_(kl).mul_(p)

    return loss


def answer_nll(source: FinalHidden, labels: torch.Tensor, chunk_rows: int = 64) -> torch.Tensor:
    """Mean next-token NLL over labelled (answer) tokens; labels [B, T] hold -100 elsewhere.

    Position t predicts token t + 1, so the rows are the positions whose NEXT label is set.
    """
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    return chunked_head_loss(source, answer_positions(labels), nll_rows(targets.reshape(-1)), chunk_rows)


def masked_kl(policy: FinalHidden, reference: FinalHidden, mask: torch.Tensor, direction: KLDirection = "forward",
              chunk_rows: int = 64) -> torch.Tensor:
    """Mean over the positions of ``mask`` [B, T] of the full-vocabulary KL between reference and policy."""
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    return chunked_head_loss(policy, mask, kl_rows_against(reference, direction), chunk_rows)


def prompt_positions(labels: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Real prompt tokens: unlabelled AND attended (SelfAug's code wrongly includes padding)."""
    return (labels == IGNORE_INDEX) & attention_mask.bool()


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose next token is an answer token (the distributions the NLL trains)."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask
