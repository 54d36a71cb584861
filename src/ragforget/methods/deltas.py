"""How far the trained weights are from the starting ones: the shared input of weight penalties.

With LoRA the change of an adapted linear layer is its effective delta ``s * B @ A`` (the base
weight W stays frozen); in full fine-tuning it is ``theta - theta0`` against a snapshot taken
before training. Shapes: A [r, in], B [out, r], W and every delta [out, in].
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from ragforget.errors import ConfigError
from ragforget.utils.numerics import upcast


@dataclass(frozen=True)
class LoraLayer:
    """One adapter of one adapted linear layer, as the tensors a penalty reads.

    ``base_weight`` is the parameter as stored (``[in, out]`` for fan_in_fan_out layers, e.g.
    GPT-2's Conv1D); ``W`` always reads ``[out, in]`` so penalties never care about the layout.
    """

    name: str
    A: nn.Parameter            # lora_A weight [r, in]
    B: nn.Parameter            # lora_B weight [out, r]
    scaling: float
    base_weight: nn.Parameter
    fan_in_fan_out: bool

    @property
    def W(self) -> torch.Tensor:
        return self.base_weight.T if self.fan_in_fan_out else self.base_weight

    def effective_delta(self) -> torch.Tensor:
        return effective_delta(self.A, self.B, self.scaling)

    def squared_delta_norm(self) -> torch.Tensor:
        return squared_delta_norm(self.A, self.B, self.scaling)


def full_precision(device: torch.device) -> AbstractContextManager[None]:
    """Autocast off: under bf16-mixed training the penalties' matmuls would otherwise run in bf16,
    whose 8-bit mantissa blurs sums of many small squares."""
    return torch.autocast(device_type=device.type, enabled=False)


def effective_delta(A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
    """The change LoRA makes to the base weight: ``s * B @ A`` [out, in]."""
    return (B @ A) * scaling


def squared_delta_norm(A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
    """``||s * B @ A||_F^2`` without forming the [out, in] product.

    ||BA||_F^2 = tr(A^T B^T B A) = tr((B^T B)(A A^T)) = sum((B^T B) * (A A^T)), the last step
    because both r x r factors are symmetric. Exact, and O(r^2 (in + out)) instead of O(r in out).
    """
    A, B = upcast(A), upcast(B)  # bf16 Gram matrices would lose the small entries
    gram_b = B.T @ B
    gram_a = A @ A.T
    return scaling ** 2 * (gram_b * gram_a).sum()


def lora_layers(model: nn.Module) -> list[LoraLayer]:
    """Every active adapter of every LoRA-adapted linear layer of ``model`` (empty without adapters).

    Only vanilla LoRA on linear layers has the delta ``s * B @ A``; DoRA and other variants, or
    adapters on embeddings and convolutions, are refused rather than penalised wrongly.
    """
    from peft.tuners.lora import LoraLayer as PeftLoraLayer
    from peft.tuners.lora.layer import Linear as PeftLoraLinear

    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, PeftLoraLayer):
            continue
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                continue  # this layer is not targeted by the active adapter
            if not isinstance(module, PeftLoraLinear) or adapter in getattr(module, "lora_variant", {}):
                raise ConfigError("model.lora", f"layer '{name}' is a {type(module).__name__} adapter "
                                  "(or a LoRA variant such as DoRA) whose update is not s * B @ A",
                                  "weight penalties support plain LoRA on linear layers only")
            layers.append(LoraLayer(name=name, A=module.lora_A[adapter].weight,  # type: ignore[arg-type]
                                    B=module.lora_B[adapter].weight,  # type: ignore[arg-type]
                                    scaling=float(module.scaling[adapter]),
                                    base_weight=module.get_base_layer().weight,  # type: ignore[arg-type]
                                    fan_in_fan_out=bool(module.fan_in_fan_out)))
    return layers


class ParameterSnapshot(nn.Module):
    """Detached copies of the trainable parameters (theta0), taken when built, for full fine-tuning.

    The copies are non-persistent buffers, so they follow the loss term to the accelerator and stay
    out of checkpoints; the live parameters are held in a plain list so they are not registered a
    second time (moving a module to a device keeps its Parameter objects, so the references hold).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._params: list[tuple[str, nn.Parameter]] = [
            (name, p) for name, p in model.named_parameters() if p.requires_grad]
        for i, (_, param) in enumerate(self._params):
            self.register_buffer(f"theta0_{i}", param.detach().clone(), persistent=False)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._params]

    @property
    def parameters_tracked(self) -> list[nn.Parameter]:
        return [p for _, p in self._params]

    def deltas(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, theta - theta0)`` per trainable parameter, with a graph to theta."""
        for i, (name, param) in enumerate(self._params):
            yield name, param - getattr(self, f"theta0_{i}")
