"""Seeds to mean ± std [95% t interval] per (row, column), and the best column of each row, with pandas.

The report's table is long, as ``table.csv`` holds it: one line per (row, column) in the spec's order,
with the metric over the column's seeds, already scaled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import t

from ragforget.report.query import Selection
from ragforget.report.spec import ReportSpec

TABLE_COLUMNS = ["metric", "row", "column", "mean", "std", "lo", "hi", "n"]


def run_metrics(selection: Selection) -> pd.DataFrame:
    """One line per selected run, indexed by its column label (a category for every column, even one
    without runs), with its metrics as columns (NaN where the run has none)."""
    labels = [label for label, runs in selection.used.items() for _ in runs]
    index = pd.CategoricalIndex(labels, categories=list(selection.used), name="column")
    return pd.DataFrame([run.metrics for runs in selection.used.values() for run in runs], index=index, dtype=float)


def over_seeds(runs: pd.DataFrame, metric: str, scale: float = 1.0, level: float = 0.95) -> pd.DataFrame:
    """Per column: mean, sample std (ddof=1), the Student-t interval of the mean (lo, hi) and n, of
    ``metric`` x ``scale``; std, lo and hi are NaN for one seed, and all but n=0 for none."""
    values = runs.reindex(columns=[metric])[metric] * scale
    stats = values.groupby(level="column", observed=False).agg(["mean", "std", "sem", "count"])
    half = stats["sem"] * t.ppf(0.5 + level / 2.0, stats["count"] - 1)  # NaN below two seeds
    return pd.DataFrame({"mean": stats["mean"], "std": stats["std"], "lo": stats["mean"] - half,
                         "hi": stats["mean"] + half, "n": stats["count"]})


def aggregate(spec: ReportSpec, selection: Selection) -> pd.DataFrame:
    """The report's long table (``TABLE_COLUMNS``): the spec's rows, each over the selection's columns."""
    runs = run_metrics(selection)
    parts = [over_seeds(runs, row.metric, row.scale).assign(metric=row.metric, row=row.label) for row in spec.rows]
    return pd.concat(parts).reset_index()[TABLE_COLUMNS]


def best_marks(spec: ReportSpec, table: pd.DataFrame) -> pd.Series:
    """Per line of ``table``: does its column have the row's best mean as shown (ties at the row's
    decimals share it), among the columns not excluded?

    A row where every column ties has no best: bolding all of them would mark nothing.
    """
    marks = pd.Series(False, index=table.index)
    candidates = table[table["mean"].notna() & ~table["column"].isin(spec.exclude_from_best)]
    for row in spec.rows:
        means = candidates.loc[candidates["row"] == row.label, "mean"]
        if means.empty:
            continue
        shown = means.map(f"{{:.{row.decimals}f}}".format)
        winners = shown == shown[means.idxmin() if row.lower_is_better else means.idxmax()]
        if not winners.all() or len(winners) == 1:
            marks[winners[winners].index] = True
    return marks


def cell_text(mean: float, std: float, lo: float, hi: float, decimals: int) -> str:
    """'12.34 ± 0.56 [11.1, 13.6]': mean ± std over seeds [95% t interval] (the value alone for one seed;
    '–' when no run has the metric)."""
    if np.isnan(mean):
        return "–"
    text = f"{mean:.{decimals}f}"
    if np.isnan(std):
        return text
    return f"{text} ± {std:.{decimals}f} [{lo:.{decimals}f}, {hi:.{decimals}f}]"
