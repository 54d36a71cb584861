"""The contract every training method follows.

A method never changes the training loop. It contributes any of four kinds of parts:
- loss terms, added to the answer NLL (``LossTerm``; e.g. selfaug, output_kl, l2sp, ewc);
- data transforms, applied to the training examples before training (``DataTransform``; replay, sdft);
- an optimizer factory (``optimizer``; mofo), AdamW when absent;
- a post-hoc weight transform, evaluated after training as extra runs (``PosthocTransform``; wise_ft).
Methods compose by merging their configs (``method=[selfaug,replay]``): each part is keyed by name.
A config holds the parts themselves (``conf/method/*.yaml``); ``methods.build.build_method`` builds
the Method from it. Parts take plain values and name a bad one by their own parameter name
(a relative ConfigError); the key of the node they were built from is put in front there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ragforget.errors import ConfigError, keys_under, require
from ragforget.models.head import FinalHidden

OptimizerFactory = Callable[..., torch.optim.Optimizer]  # (params, lr=, weight_decay=) -> optimizer


@dataclass
class StepTensors:
    """What a loss term may read in one training step.

    There are no [B, T, V] logits: a term that needs next-token distributions passes the final
    hidden states and the head to ``methods.losses``, which forms logits a chunk of rows at a time.
    """

    batch: Mapping[str, torch.Tensor]   # input_ids, attention_mask, labels: [B, T]
    policy: FinalHidden                 # the model being trained: hidden [B, T, H] + its LM head
    reference: FinalHidden | None       # the frozen starting model's, if any term needs it
    model: nn.Module
    chunk_rows: int = 64                # rows of logits formed at a time (train.loss_chunk_rows)

    @property
    def device(self) -> torch.device:
        return self.policy.hidden.device


@dataclass
class MethodContext:
    """Run facts a method's parts may need besides the batch; set once per run."""

    model_path: str          # the materialized starting model
    tokenizer: PreTrainedTokenizerBase
    chat_template: bool
    dtype: str
    cache_dir: Path
    seed: int
    max_length: int | None = None
    model_key: dict[str, Any] = field(default_factory=dict)  # what identifies the model in cache keys
    metrics: dict[str, float] = field(default_factory=dict)    # one-off figures parts report (MLflow)
    artifacts: dict[str, Path] = field(default_factory=dict)   # files or folders parts built (MLflow)


class LossTerm(nn.Module):
    """One weighted addend of the training loss (``weight * value``). Subclasses implement ``value``."""

    needs_reference: bool = False

    def __init__(self, weight: float) -> None:
        super().__init__()
        require(weight >= 0, "weight", f"must be >= 0, got {weight}", relative=True)
        self.weight = float(weight)

    def setup(self, model: nn.Module, context: MethodContext) -> None:
        """Called once before training, on the model about to be trained (snapshots, Fisher, ...)."""

    def value(self, step: StepTensors) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, step: StepTensors) -> torch.Tensor:
        return self.weight * self.value(step)


class DataTransform:
    """Rewrites the training examples before training (mixing, rewriting); must be deterministic."""

    def prepare(self, context: MethodContext) -> Any:
        """One-off work that does not depend on the examples (e.g. synthesizing a general set).

        Runs on its own with ``stage=synthesize``; ``__call__`` must call it too (its result is cached).
        """

    def __call__(self, examples: list[Any], context: MethodContext) -> list[Any]:
        raise NotImplementedError


@dataclass
class Variant:
    """One post-hoc setting evaluated as its own run: a label, its params, and whether it is a no-op."""

    name: str
    params: dict[str, Any]
    identity: bool = False  # the trained model itself: its evaluation can be reused


class PosthocTransform:
    """Changes trained weights at evaluation time, once per variant, without retraining."""

    def variants(self) -> Sequence[Variant]:
        raise NotImplementedError

    def applied(self, model: nn.Module, variant: Variant, context: MethodContext) -> AbstractContextManager[None]:
        """A context inside which ``model`` behaves as the variant; the trained weights come back after."""
        raise NotImplementedError


class Method:
    """A named bundle of parts; ``trains=False`` evaluates the starting model as is.

    A bad part is a ConfigError keyed relative to the method's config node (``terms.selfaug``).
    ``config_key`` is that node's full key (``method``, set by ``build_method``): a relative ConfigError
    a part raises at work (a transform's ratio too large for the data) is named under it.
    """

    def __init__(self, name: str, terms: Mapping[str, LossTerm] | None = None,
                 transforms: Mapping[str, DataTransform] | None = None,
                 optimizer: OptimizerFactory | None = None, posthoc: PosthocTransform | None = None,
                 trains: bool = True, config_key: str = "") -> None:
        self.name = name
        self.config_key = config_key
        self.terms = dict(terms or {})
        self.transforms = dict(transforms or {})
        self.optimizer: OptimizerFactory = optimizer or partial(torch.optim.AdamW)
        # A partial defers the optimizer's own checks to configure_optimizers; build it once on a dummy
        # parameter now, so bad settings (e.g. method.optimizer.fraction=0) fail before any work starts.
        try:
            self.optimizer([nn.Parameter(torch.zeros(1))], lr=0.0, weight_decay=0.0)
        except ConfigError as error:
            raise error.under("optimizer", relative=True) from None
        self.posthoc = posthoc
        self.trains = trains
        _check_types("terms", self.terms, LossTerm)
        _check_types("transforms", self.transforms, DataTransform)
        if posthoc is not None and not isinstance(posthoc, PosthocTransform):
            raise ConfigError("posthoc", f"is a {type(posthoc).__name__}, not a PosthocTransform", relative=True)

    @property
    def needs_reference(self) -> bool:
        return any(term.needs_reference for term in self.terms.values())

    def transform_data(self, examples: list[Any], context: MethodContext) -> list[Any]:
        """Apply the data transforms in config order."""
        for name, transform in self.transforms.items():
            with self._part_keys("transforms", name):
                examples = transform(examples, context)
        return examples

    def prepare_data(self, context: MethodContext) -> None:
        """The data transforms' one-off work, without training (``stage=synthesize``)."""
        for name, transform in self.transforms.items():
            with self._part_keys("transforms", name):
                transform.prepare(context)

    def setup(self, model: nn.Module, context: MethodContext) -> None:
        """One-off preparation of every loss term (before the first step)."""
        for name, term in self.terms.items():
            with self._part_keys("terms", name):
                term.setup(model, context)

    def _part_keys(self, group: str, name: str) -> AbstractContextManager[None]:
        """Names a part's relative ConfigErrors under its config node (``method.transforms.replay``)."""
        prefix = ".".join(part for part in (self.config_key, group, name) if part)
        return keys_under(prefix, relative=not self.config_key)


def _check_types(key: str, parts: Mapping[str, Any], kind: type) -> None:
    for name, part in parts.items():
        if not isinstance(part, kind):
            raise ConfigError(f"{key}.{name}", f"is a {type(part).__name__}, not a {kind.__name__}",
                              f"its _target_ must point to a {kind.__name__} subclass", relative=True)


def parameters_to_train(model: nn.Module) -> Iterable[nn.Parameter]:
    """The parameters the optimizer updates (LoRA adapters, or everything for full fine-tuning)."""
    return [p for p in model.parameters() if p.requires_grad]
