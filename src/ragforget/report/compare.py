"""Paired differences between a report's columns: the same seeds, the same questions and retention items.

Two methods trained with the same seed saw the same training subset and are evaluated on the same
items, so their difference is paired twice: per seed, and per item. For a measure (ODQA accuracy, the
retention macro average) the difference of a column from the reference column is the mean over shared
seeds (and, for the macro average, over tasks) of the item-paired deltas; its interval resamples each
(seed, task)'s items. Seed-to-seed variation itself is in the table's t intervals, not here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ragforget.evaluation.statistics import (
    ITEM_SCORES,
    ItemScores,
    PairedDelta,
    paired_macro_bootstrap,
    read_item_scores,
)
from ragforget.report.query import Selection
from ragforget.report.render import markdown_table
from ragforget.report.spec import ReportSpec
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

ItemLoader = Callable[[str], dict[str, ItemScores] | None]   # run id -> its measures item by item


@dataclass(frozen=True)
class Comparison:
    """``column`` minus ``reference`` on ``measure``, over ``seeds`` shared seeds."""

    measure: str
    column: str
    reference: str
    delta: PairedDelta
    seeds: int


def mlflow_item_scores(tracking_uri: str) -> ItemLoader:
    """Read a run's ``eval/item_scores.json`` artifact (None for runs logged before it existed)."""
    import mlflow.artifacts

    def load(run_id: str) -> dict[str, ItemScores] | None:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"eval/{ITEM_SCORES}",
                                                       tracking_uri=tracking_uri)
        except Exception as exc:  # MLflow raises several types for a missing artifact
            log.warning("run %s has no eval/%s (%s): left out of the paired comparison", run_id, ITEM_SCORES,
                        type(exc).__name__)
            return None
        return read_item_scores(Path(path).parent)

    return load


def _parts(items: dict[str, ItemScores], measure: str) -> dict[str, ItemScores]:
    """The item scores a measure averages: itself, or every retention task for the macro average."""
    if measure == "retention/macro_avg":
        return {name: scores for name, scores in items.items() if name.startswith("retention/")}
    return {measure: items[measure]} if measure in items else {}


def paired_comparisons(spec: ReportSpec, selection: Selection, load: ItemLoader, resamples: int = 2000,
                       seed: int = 0) -> list[Comparison]:
    """Every column against ``spec.compare_to`` on each of ``spec.compare``, paired by seed and item."""
    reference = spec.compare_to
    if reference is None or not selection.used.get(reference):
        return []
    reference_runs = {run.seed: run for run in selection.used[reference]}
    items_of = functools.cache(load)  # a reference run is paired with every column: read it once

    comparisons = []
    for label, runs in selection.used.items():
        if label == reference:
            continue
        pairs = [(ref, own, run.seed) for run in runs if run.seed in reference_runs
                 if (ref := items_of(reference_runs[run.seed].run_id)) is not None
                 and (own := items_of(run.run_id)) is not None]
        for measure in spec.compare:
            base, tuned, seeds = {}, {}, 0
            for ref, own, run_seed in pairs:
                ref_parts, own_parts = _parts(ref, measure), _parts(own, measure)
                if ref_parts and ref_parts.keys() == own_parts.keys():
                    base.update({f"{run_seed}:{name}": scores for name, scores in ref_parts.items()})
                    tuned.update({f"{run_seed}:{name}": scores for name, scores in own_parts.items()})
                    seeds += 1
            if base:
                comparisons.append(Comparison(measure, label, reference,
                                              paired_macro_bootstrap(base, tuned, resamples, seed), seeds))
    return comparisons


def delta_text(d: PairedDelta, scale: float) -> str:
    """'+1.23 [-0.50, +2.96] *' (x ``scale``): * where the interval excludes 0."""
    resolved = " *" if d.lo > 0 or d.hi < 0 else ""
    return f"{scale * d.delta:+.2f} [{scale * d.lo:+.2f}, {scale * d.hi:+.2f}]{resolved}"


def comparison_lines(comparisons: Sequence[Comparison], scale: float = 100.0) -> list[str]:
    """A titled markdown table: one row per measure, one column per compared column."""
    if not comparisons:
        return []
    texts = pd.DataFrame([(c.measure, c.column, delta_text(c.delta, scale)) for c in comparisons],
                         columns=["measure", "column", "text"])
    table = (texts.pivot(index="measure", columns="column", values="text")
             .reindex(index=texts["measure"].unique(), columns=texts["column"].unique()).fillna("–")
             .rename_axis(index="measure", columns=None))
    return [f"### Paired differences from {comparisons[0].reference} (x{scale:g}; same seeds and items, 95% "
            "bootstrap over items; * = the interval excludes 0)", "", markdown_table(table)]

