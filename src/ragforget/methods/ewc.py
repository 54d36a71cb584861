"""EWC (Kirkpatrick et al., PNAS 2017): an L2 pull to the start, weighted by each weight's Fisher.

The diagonal empirical Fisher is estimated once, before training, on general instruction data: it
marks the weights the model's general abilities depend on most. With LoRA it is the Fisher of the
adapted layers' BASE weights W (the adapters are a no-op at init, B = 0, so these are the base
model's gradients) and the penalty reads each layer's effective delta s * B @ A elementwise; in full
fine-tuning it covers every trainable tensor and the delta is theta - theta0.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ragforget.data.encoding import collate_for_training
from ragforget.data.general import GeneralDataSource, general_training_examples, read_general
from ragforget.data.rag_examples import TrainingExample, encode_for_training
from ragforget.errors import require
from ragforget.methods.base import LossTerm, MethodContext, StepTensors
from ragforget.methods.deltas import LoraLayer, ParameterSnapshot, full_precision, lora_layers
from ragforget.methods.fisher import diagonal_fisher, gradients_enabled
from ragforget.methods.losses import answer_nll
from ragforget.models.head import final_hidden
from ragforget.utils.hashing import code_and_versions, sha256_file, stable_hash
from ragforget.utils.io import atomic_path, cache_lock
from ragforget.utils.logging import get_logger
from ragforget.utils.numerics import upcast

log = get_logger(__name__)

FISHER_FORMAT = 1      # bump when the estimate changes meaning, so old cache files are not reused
SAMPLE_SEED = 0        # fixed, not the run seed: every seed of a sweep shares one Fisher


class EWC(LossTerm):
    """weight * 0.5 * sum_i F_i * delta_i^2, so weight = lambda gives METHODS.md's
    sum_i (lambda/2) F_i (theta_i - theta0_i)^2 exactly.

    ``normalize`` divides F by its mean over all entries. Raw Fisher magnitudes depend on the model
    and the data (SmolLM2-135M's adapted weights on ShareGPT: mean 3e-7, max 0.13; the tiny test
    model: mean 1e-5), so a raw lambda would need re-tuning per setting; normalized, F only
    redistributes the pull among weights and lambda reads on L2-SP's scale (F = 1 everywhere is
    exactly L2-SP). The Fisher is kept in fp32, one entry per penalised weight (425 MB for
    SmolLM2-135M with all-linear LoRA), in memory and in the cache.
    """

    def __init__(self, source: GeneralDataSource, weight: float, num_samples: int, max_length: int | None,
                 normalize: bool) -> None:
        super().__init__(weight)
        require(isinstance(source, GeneralDataSource), "source",
                f"is a {type(source).__name__}, not a general-data source", "set general_data=<source>", relative=True)
        require(num_samples >= 1, "num_samples", f"must be >= 1, got {num_samples}", relative=True)
        require(max_length is None or max_length >= 2, "max_length",
                f"must be null (train.max_length) or >= 2, got {max_length}", relative=True)
        self.source = source
        self.num_samples = int(num_samples)
        self.max_length = max_length
        self.normalize = bool(normalize)
        self._layers: list[LoraLayer] = []
        self.snapshot: ParameterSnapshot | None = None
        self._count = 0

    def setup(self, model: nn.Module, context: MethodContext) -> None:
        self._layers = lora_layers(model)
        if self._layers:
            names = [layer.name for layer in self._layers]
            targets = [layer.base_weight for layer in self._layers]
        else:
            self.snapshot = ParameterSnapshot(model)
            names, targets = self.snapshot.names, self.snapshot.parameters_tracked
        fisher = self._cached_fisher(model, names, targets, context)
        if self._layers:  # Fisher of W as stored; the penalty reads [out, in]
            fisher = [f.T.contiguous() if layer.fan_in_fan_out else f for f, layer in zip(fisher, self._layers)]
        if self.normalize:
            fisher = normalized(fisher)
        for i, (f, target) in enumerate(zip(fisher, targets)):
            self.register_buffer(f"fisher_{i}", f.to(target.device), persistent=False)
        self._count = len(fisher)

    def fisher(self) -> list[torch.Tensor]:
        """The Fisher per penalised tensor, in the order of the layers (or trainable parameters)."""
        return [getattr(self, f"fisher_{i}") for i in range(self._count)]

    def value(self, step: StepTensors) -> torch.Tensor:
        if self._count == 0:
            raise RuntimeError("EWC.value called before setup")
        with full_precision(step.device):
            if self.snapshot is not None:
                terms = [(f * upcast(delta).square()).sum()
                         for f, (_, delta) in zip(self.fisher(), self.snapshot.deltas())]
            else:
                terms = [fisher_weighted_delta_norm(layer.A, layer.B, layer.scaling, f)
                         for layer, f in zip(self._layers, self.fisher())]
            return 0.5 * torch.stack(terms).sum()

    def _cached_fisher(self, model: nn.Module, names: list[str], targets: Sequence[torch.Tensor],
                       context: MethodContext) -> list[torch.Tensor]:
        data_path = self.source.materialize(context.cache_dir)
        max_length = self.max_length if self.max_length is not None else context.max_length
        key = stable_hash({"format": FISHER_FORMAT, "model": context.model_key, "data": sha256_file(data_path),
                           **code_and_versions(__name__, "ragforget.methods.fisher", "ragforget.methods.losses",
                                               "ragforget.models", "ragforget.data", "ragforget.utils.numerics"),
                           "num_samples": self.num_samples, "max_length": max_length,
                           "chat_template": context.chat_template, "tensors": names, "sample_seed": SAMPLE_SEED})
        path = Path(context.cache_dir) / "fisher" / f"{key}.pt"
        with cache_lock(path):  # parallel jobs estimate it once
            return self._load_or_estimate(path, model, names, targets, context, data_path, max_length)

    def _load_or_estimate(self, path: Path, model: nn.Module, names: list[str], targets: Sequence[torch.Tensor],
                          context: MethodContext, data_path: Path, max_length: int | None) -> list[torch.Tensor]:
        if path.exists():
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored["names"] == names:
                context.metrics.update({"ewc/fisher_s": 0.0, "ewc/fisher_cache_hit": 1.0})
                log.info("EWC: Fisher from cache %s", path)
                return list(stored["fisher"])
            log.warning("EWC: cached Fisher %s is for other tensors; recomputing", path)
        start = time.perf_counter()
        examples = fisher_examples(data_path, self.num_samples)
        fisher = estimate_fisher(model, targets, examples, context, max_length)
        seconds = time.perf_counter() - start
        with atomic_path(path) as tmp:
            torch.save({"names": names, "fisher": [f.cpu() for f in fisher]}, tmp)
        context.metrics.update({"ewc/fisher_s": seconds, "ewc/fisher_cache_hit": 0.0})
        log.info("EWC: Fisher over %d samples in %.1fs, cached at %s", len(examples), seconds, path)
        return fisher


def fisher_examples(path: Path, num_samples: int) -> list[TrainingExample]:
    """A fixed-seed sample of ``num_samples`` general conversations (all of them if fewer)."""
    rows = read_general(path)
    if len(rows) > num_samples:
        rows = random.Random(SAMPLE_SEED).sample(rows, num_samples)
    elif len(rows) < num_samples:
        log.warning("EWC: %s has %d rows, fewer than num_samples=%d; using all", path, len(rows), num_samples)
    return general_training_examples(rows)


def estimate_fisher(model: nn.Module, targets: Sequence[torch.Tensor], examples: Sequence[TrainingExample],
                    context: MethodContext, max_length: int | None) -> list[torch.Tensor]:
    """Diagonal empirical Fisher of ``targets`` under the answer NLL, one sample at a time.

    Dropout is off (the Fisher of the deterministic model) and the model's mode and the targets'
    requires_grad flags come back afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        with gradients_enabled(targets):
            return diagonal_fisher(targets, sample_losses(model, examples, context, max_length))
    finally:
        model.train(was_training)


def sample_losses(model: nn.Module, examples: Sequence[TrainingExample], context: MethodContext,
                  max_length: int | None) -> Iterator[torch.Tensor]:
    """The answer NLL of each example on its own (a batch of one: no padding, no cancelling)."""
    device = next(model.parameters()).device
    for example in tqdm(examples, desc="EWC Fisher", unit="sample", leave=False):
        encoded = encode_for_training(example, context.tokenizer, context.chat_template)
        batch = collate_for_training([encoded], context.tokenizer.pad_token_id, max_length)
        batch = {k: v.to(device) for k, v in batch.items()}
        yield answer_nll(final_hidden(model, batch), batch["labels"])


def normalized(fisher: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """F divided by its mean over every entry of every tensor (mean 1 afterwards)."""
    total = sum(float(f.double().sum()) for f in fisher)
    count = sum(f.numel() for f in fisher)
    if total <= 0:
        raise ValueError("the Fisher is zero everywhere (no answer tokens reached the penalised weights?); "
                         "cannot normalize it")
    return [f * (count / total) for f in fisher]


class _FisherWeightedDelta(torch.autograd.Function):
    """sum(F * (s * B @ A)^2) for one layer, with its gradient formed in forward.

    Autograd would keep every layer's [out, in] delta alive until backward, together as large as
    the adapted weights themselves; here each delta lives only inside forward and just the small
    gradients of A [r, in] and B [out, r] are kept. With G = F * delta:
      d/dA = 2 s B^T G,   d/dB = 2 s G A^T.
    """

    @staticmethod
    def forward(ctx: Any, A: torch.Tensor, B: torch.Tensor, scaling: float,
                fisher: torch.Tensor) -> torch.Tensor:
        a32, b32 = upcast(A), upcast(B)
        delta = (b32 @ a32) * scaling
        weighted = fisher * delta
        value = (weighted * delta).sum()
        grad_a = ((2 * scaling) * (b32.T @ weighted)).to(A.dtype) if ctx.needs_input_grad[0] else None
        grad_b = ((2 * scaling) * (weighted @ a32.T)).to(B.dtype) if ctx.needs_input_grad[1] else None
        ctx.save_for_backward(grad_a, grad_b)
        return value

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        grad_a, grad_b = ctx.saved_tensors
        return (None if grad_a is None else grad_a * grad_out.to(grad_a.dtype),
                None if grad_b is None else grad_b * grad_out.to(grad_b.dtype), None, None)


def fisher_weighted_delta_norm(A: torch.Tensor, B: torch.Tensor, scaling: float, fisher: torch.Tensor) -> torch.Tensor:
    """sum(F * (s * B @ A)^2) over one layer's [out, in] entries (fp32; differentiable in A and B)."""
    return _FisherWeightedDelta.apply(A, B, scaling, fisher)
