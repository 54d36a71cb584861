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

from ragforget.data.general import GeneralDataSource, general_training_examples, read_general
from ragforget.data.rag_examples import TrainingExample
from ragforget.errors import ConfigError
from ragforget.methods.base import DataTransform, MethodContext, require
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

RATIO_KEY = "method.replay.ratio"


def general_count(n_examples: int, ratio: float) -> int:
    """round(ratio * N), halves rounded up (Python's round would send 2.5 to 2 but 3.5 to 4)."""
    return math.floor(ratio * n_examples + 0.5)


class MixGeneralData(DataTransform):
    """Replace a seeded ``ratio`` share of the RAG examples with general ones, then shuffle."""

    def __init__(self, source: GeneralDataSource, ratio: float) -> None:
        require(isinstance(ratio, (int, float)) and not isinstance(ratio, bool), RATIO_KEY,
                f"must be a number, got {ratio!r}")
        require(0.0 <= float(ratio) <= 1.0, RATIO_KEY, f"must be in [0, 1], got {ratio}",
                "the share of training examples that are general data, e.g. 0.1")
        require(callable(getattr(source, "materialize", None)), "general_data",
                f"is a {type(source).__name__}, not a general-data source",
                "its _target_ must be e.g. ragforget.data.general.PackagedShareGPT")
        self.source = source
        self.ratio = float(ratio)

    def __call__(self, examples: list[TrainingExample], context: MethodContext) -> list[TrainingExample]:
        n_general = general_count(len(examples), self.ratio)
        context.metrics["replay/general_examples"] = float(n_general)
        if n_general == 0:
            return list(examples)
        rag_indices = [i for i, example in enumerate(examples) if example.source == "rag"]
        if n_general > len(rag_indices):  # only when an earlier transform already mixed other data in
            raise ConfigError(RATIO_KEY, f"asks for {n_general} general examples but only "
                              f"{len(rag_indices)} of {len(examples)} training examples are RAG examples")
        path = self.source.materialize(context.cache_dir)
        rows = read_general(path)
        if len(rows) < n_general:
            raise ConfigError("general_data", f"{path} has {len(rows)} usable row(s); replay needs {n_general} "
                              f"({self.ratio} of {len(examples)} training examples)",
                              "use a larger general_data source (or raise general_data.max_rows), "
                              f"or lower {RATIO_KEY}")
        rng = random.Random(context.seed)
        replaced = set(rng.sample(rag_indices, n_general))
        general = general_training_examples(rng.sample(rows, n_general))
        mixed = [example for i, example in enumerate(examples) if i not in replaced] + general
        rng.shuffle(mixed)
        log.info("replay: %d of %d training examples are general data (from %d rows in %s)",
                 n_general, len(mixed), len(rows), path)
        return mixed
