"""WiSE-FT (Wortsman et al., CVPR 2022): evaluate theta0 + w * (theta - theta0) for several w, no retraining."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ragforget.errors import require
from ragforget.methods.base import MethodContext, PosthocTransform, Variant
from ragforget.models.loading import has_adapters, load_model
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

WEIGHT_PARAM = "method.posthoc.weight"  # what each variant run logs as its parameter (beside method.posthoc.weights)


class WiseFT(PosthocTransform):
    """One variant per interpolation weight w in [0, 1]; w = 0 is the base model, w = 1 the trained one.

    LoRA: theta - theta0 is the adapter's delta B @ A * scaling, so scaling each adapter by w IS the
    interpolation (exact, no weight copies). Full fine-tuning: the base weights are loaded from the run's
    starting model and each parameter becomes lerp(theta0, theta, w); a copy of theta restores it.
    """

    def __init__(self, weights: Sequence[float]) -> None:
        require(isinstance(weights, Sequence) and not isinstance(weights, str) and len(weights) > 0,
                "weights", f"must be a non-empty list of numbers in [0, 1], got {weights!r}", relative=True)
        for weight in weights:
            is_number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
            require(is_number and math.isfinite(weight) and 0 <= weight <= 1, "weights",
                    f"every weight must be a number in [0, 1], got {weight!r}", relative=True)
        self.weights = [float(w) for w in weights]
        # Each variant is a run with its own folder named after w: a repeat would overwrite another.
        require(len(set(self.weights)) == len(self.weights), "weights",
                f"has repeated weights: {self.weights}", relative=True)

    def variants(self) -> list[Variant]:
        return [Variant(name=f"w{w}", params={WEIGHT_PARAM: w}, identity=w == 1.0) for w in self.weights]

    @contextmanager
    def applied(self, model: nn.Module, variant: Variant, context: MethodContext) -> Iterator[None]:
        weight = float(variant.params[WEIGHT_PARAM])
        if has_adapters(model):
            with scaled_adapters(model, weight):
                yield
        else:
            with interpolated_weights(model, context.model_path, context.dtype, weight):
                yield


@contextmanager
def scaled_adapters(model: nn.Module, weight: float) -> Iterator[None]:
    """Multiply every LoRA layer's scaling by ``weight``; the original scalings come back exactly.

    peft's ``rescale_adapter_scale`` does the scaling (peft documents it as WiSE-FT for LoRA). It does
    not check that the scaling still matters, so that is checked here first.
    """
    from peft.helpers import rescale_adapter_scale
    from peft.tuners.lora import LoraLayer

    for layer in model.modules():
        # A merged adapter ignores its scaling, and variants (DoRA, ...) are not linear in it.
        if isinstance(layer, LoraLayer) and (layer.merged or getattr(layer, "lora_variant", None)):
            raise ValueError("wise_ft needs unmerged plain LoRA adapters (no merge, no DoRA-like variants)")
    with rescale_adapter_scale(model, weight):
        yield


@contextmanager
def interpolated_weights(model: nn.Module, base_path: str, dtype: str, weight: float) -> Iterator[None]:
    """Set every parameter to lerp(theta0, theta, weight) (exact at 0 and 1); theta comes back exactly."""
    params = dict(model.named_parameters())
    log.info("wise_ft: loading the base weights from %s", base_path)
    base_params = dict(load_model(base_path, dtype).named_parameters())
    _check_same_parameters(params, base_params)
    # The trained copy lives on the CPU: the GPU holds only the model and one tensor at a time.
    trained = {name: p.detach().to("cpu", copy=True) for name, p in params.items()}
    try:
        with torch.no_grad():
            for name, param in params.items():
                start = base_params.pop(name).to(param.device, param.dtype)
                param.copy_(start.lerp_(param, weight))
        yield
    finally:
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(trained[name])


def _check_same_parameters(trained: dict[str, nn.Parameter], base: dict[str, nn.Parameter]) -> None:
    names_differ = trained.keys() != base.keys()
    shapes_differ = not names_differ and any(p.shape != base[n].shape for n, p in trained.items())
    if names_differ or shapes_differ:
        differing = sorted(trained.keys() ^ base.keys())[:5]
        raise ValueError("wise_ft: the trained model's parameters do not match the base model's "
                         f"(names differ: {differing}, shapes differ: {shapes_differ})")
