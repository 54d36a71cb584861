"""MoFO (Chen et al., TMLR 2025, arXiv 2407.20999): Adam that moves only the largest-momentum coordinates."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ragforget.errors import require


class MoFO(torch.optim.Optimizer):
    """Momentum-Filtered Optimizer: an AdamW step restricted to the top ``fraction`` of coordinates by |m_t|.

    Per step (the paper's Algorithm 1), for every parameter tensor (one "block" of the partition):
    1. the Adam moments m_t, v_t are updated for ALL coordinates, with the usual bias corrections;
    2. the k = ceil(fraction * numel) coordinates with the largest |m_t| are selected (top-k, so
       exactly k even with ties; |m_t| and |m_t / (1 - beta1^t)| rank alike);
    3. only those coordinates take the AdamW step, decoupled weight decay included; all others stay
       bit-identical. Fewer coordinates leave the pre-trained point, which is how MoFO limits forgetting.

    With ``fraction=1`` this is exactly ``torch.optim.AdamW`` (same arithmetic, same order).

    Deviations, on purpose:
    - The partition is PyTorch's parameter tensors. The official code (YChen-zzz/MoFO, AdamW_MoFO) also
      partitions by tensor but does not filter biases and norm weights (they take the full step); here
      every tensor is filtered. With LoRA (the default) no bias or norm weight is trained, so it is moot.
    - The official code decays every coordinate; the paper's algorithm has no weight decay. Here decay
      touches only the selected coordinates, so the unselected ones truly stay put.
    - The official code uses k = floor(fraction * numel) and keeps every tie at the threshold; ceil keeps at
      least one coordinate moving in small tensors (LoRA rows), and top-k keeps exactly k.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, fraction: float) -> None:
        # lr, betas, eps and weight_decay keep AdamW's signature and defaults (the training module passes
        # train.lr and train.weight_decay); fraction is MoFO's own, set in conf/method/mofo.yaml.
        require(_is_number(fraction) and 0 < fraction <= 1, "fraction",
                f"must be in (0, 1], got {fraction!r}", "the paper recommends 0.05-0.2; 1 is plain AdamW",
                relative=True)
        require(_is_number(lr) and lr >= 0, "train.lr", f"must be >= 0, got {lr!r}")
        require(_is_number(weight_decay) and weight_decay >= 0, "train.weight_decay",
                f"must be >= 0, got {weight_decay!r}")
        require(len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas),
                "betas", f"must be two numbers in [0, 1), got {betas!r}", relative=True)
        require(_is_number(eps) and eps >= 0, "eps", f"must be >= 0, got {eps!r}", relative=True)
        defaults = {"lr": float(lr), "betas": (float(betas[0]), float(betas[1])), "eps": float(eps),
                    "weight_decay": float(weight_decay), "fraction": float(fraction)}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():  # Lightning computes the loss inside the closure
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError("MoFO does not support sparse gradients")
                state = self.state[param]
                if not state:
                    # The same state layout as AdamW, so checkpoints look familiar and resume alike.
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                _filtered_adamw_step(param, param.grad, state, group)
        return loss


def _filtered_adamw_step(param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any],
                         group: dict[str, Any]) -> None:
    """One AdamW step on the top-|m| coordinates of ``param``; the arithmetic mirrors torch's AdamW."""
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    beta1, beta2 = group["betas"]
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    step = state["step"].item()

    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step_size = lr / (1 - beta1**step)
    denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)

    stepped = param.mul(1 - lr * weight_decay) if weight_decay != 0 else param.clone()
    stepped.addcdiv_(exp_avg, denom, value=-step_size)
    param.copy_(torch.where(top_fraction_mask(exp_avg, group["fraction"]), stepped, param))


def top_fraction_mask(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean mask of the ceil(fraction * numel) entries with the largest |score| (exactly that many)."""
    numel = scores.numel()
    # Rounding first keeps float noise (0.3 * 10 = 3.0000000000000004) from adding a coordinate.
    k = min(numel, max(1, math.ceil(round(fraction * numel, 6))))
    if k == numel:
        return torch.ones_like(scores, dtype=torch.bool)
    flat = torch.zeros(numel, dtype=torch.bool, device=scores.device)
    flat[scores.abs().flatten().topk(k, sorted=False).indices] = True
    return flat.view_as(scores)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
