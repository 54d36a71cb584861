"""Replay: a share of the training stream is general instruction data instead of RAG examples.

SelfAug's Table 1 baseline mixes MAGPIE data 1:9. Here the number of training examples N stays
that of sft (equal compute, so the comparison is fair): round(ratio * N) RAG examples are replaced
by as many general examples, drawn without replacement. A source with fewer usable rows than needed
is an error rather than a silent repeat, since repeats would train on the same conversations
several times and change what "ratio" means.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from ragforget.data.general import GeneralDataSource, general_training_examples, read_general
from ragforget.data.rag_examples import TrainingExample
from ragforget.errors import ConfigError, require
from ragforget.methods.base import DataTransform, MethodContext
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


def general_count(n_examples: int, ratio: float) -> int:
    """round(ratio * N), halves rounded up (Python's round would send 2.5 to 2 but 3.5 to 4)."""
    return math.floor(ratio * n_examples + 0.5)


class MixGeneralData(DataTransform):
    """Replace a seeded ``ratio`` share of the RAG examples with general ones, then shuffle."""

    def __init__(self, source: GeneralDataSource, ratio: float) -> None:
        require(isinstance(ratio, (int, float)) and not isinstance(ratio, bool), "ratio",
                f"must be a number, got {ratio!r}", relative=True)
        require(0.0 <= float(ratio) <= 1.0, "ratio", f"must be in [0, 1], got {ratio}",
                "the share of training examples that are general data, e.g. 0.1", relative=True)
        require(isinstance(source, GeneralDataSource), "source",
                f"is a {type(source).__name__}, not a general-data source",
                "set general_data=<source>, or a _target_ such as ragforget.data.general.PackagedShareGPT",
                relative=True)
        self.source = source
        self.ratio = float(ratio)

    def prepare(self, context: MethodContext) -> Path:
        """Build (or find in the cache) the general set, and report it to MLflow."""
        path = self.source.materialize(context.cache_dir)
        report = self.source.report(path)
        context.metrics.update(report.metrics)
        if report.folder is not None:
            context.artifacts["general_data"] = report.folder
        return path

    def __call__(self, examples: list[TrainingExample], context: MethodContext) -> list[TrainingExample]:
        n_general = general_count(len(examples), self.ratio)
        context.metrics["replay/general_examples"] = float(n_general)
        if n_general == 0:
            return list(examples)
        rag_indices = [i for i, example in enumerate(examples) if example.source == "rag"]
        if n_general > len(rag_indices):  # only when an earlier transform already mixed other data in
            raise ConfigError("ratio", f"asks for {n_general} general examples but only "
                              f"{len(rag_indices)} of {len(examples)} training examples are RAG examples",
                              relative=True)
        path = self.prepare(context)
        rows = read_general(path)
        if len(rows) < n_general:
            source = self.source
            key = f"source.{source.config_key}" if source.config_key_relative else source.config_key
            raise ConfigError(key, f"{path} has {len(rows)} usable row(s); replay needs {n_general} "
                              f"({self.ratio} of {len(examples)} training examples)",
                              f"{source.grow_hint}, or lower the transform's ratio",
                              relative=source.config_key_relative)
        rng = random.Random(context.seed)
        replaced = set(rng.sample(rag_indices, n_general))
        general = general_training_examples(rng.sample(rows, n_general))
        mixed = [example for i, example in enumerate(examples) if i not in replaced] + general
        rng.shuffle(mixed)
        log.info("replay: %d of %d training examples are general data (from %d rows in %s)",
                 n_general, len(mixed), len(rows), path)
        return mixed
