"""The report's two figures: task accuracy vs retention, and forgetting vs distribution shift.

Both name the model(s) from the runs themselves, keep plain tick labels (no offset notation for metrics
that differ in the fourth decimal), wrap long titles, and label points through the legend so that
labels never collide.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

from ragforget.evaluation.statistics import pearson_interval
from ragforget.report.aggregate import over_seeds, run_metrics
from ragforget.report.query import Selection
from ragforget.report.spec import ReportSpec

# A correlation over fewer runs, or over values that barely vary, says nothing: it is not drawn.
MIN_CORRELATION_POINTS = 5
MIN_DISTINCT_VALUES = 3


def models_of(selection: Selection) -> str:
    """The model(s) the selected runs trained, from their tags (not from the report's title)."""
    models = sorted({run.tags.get("model", "?") for runs in selection.used.values() for run in runs})
    return ", ".join(models) or "no runs"


def new_figure() -> tuple[Any, Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on the machines this runs on
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    return plt, fig, ax


def save_figure(plt: Any, fig: Any, ax: Any, title: str, path: Path) -> None:
    ax.ticklabel_format(axis="both", style="plain", useOffset=False)
    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def tradeoff_plot(spec: ReportSpec, selection: Selection, path: Path) -> int:
    """One point per column: mean (x, y) over seeds, error bars = std over seeds; returns the points drawn."""
    x_metric, y_metric = spec.tradeoff
    runs = run_metrics(selection)
    x, y = over_seeds(runs, x_metric).fillna({"std": 0.0}), over_seeds(runs, y_metric).fillna({"std": 0.0})
    both = x.index[(x["n"] > 0) & (y["n"] > 0)]
    plt, fig, ax = new_figure()
    for label in both:
        ax.errorbar(x.at[label, "mean"], y.at[label, "mean"], xerr=x.at[label, "std"], yerr=y.at[label, "std"],
                    fmt="o", capsize=3, label=f"{label} (n={x.at[label, 'n']})")
    ax.set_xlabel(f"{x_metric} (general ability kept)")
    ax.set_ylabel(f"{y_metric} (task)")
    save_figure(plt, fig, ax, f"{spec.name}: task vs retention, {models_of(selection)}; mean ± std over seeds", path)
    return len(both)


def correlation_text(xs: list[float], ys: list[float], groups: list[str] | None = None,
                     seed: int = 0) -> tuple[str, tuple[float, float, float]]:
    """'r = 0.42 [0.10, 0.70]' with its bootstrap interval (over ``groups`` when given: e.g. the runs a
    curve's points came from), or why no correlation is shown."""
    if len(xs) < MIN_CORRELATION_POINTS:
        return f"r not shown: {len(xs)} run(s), fewer than {MIN_CORRELATION_POINTS}", (math.nan,) * 3
    if min(len(set(xs)), len(set(ys))) < MIN_DISTINCT_VALUES:
        return f"r not shown: fewer than {MIN_DISTINCT_VALUES} distinct values on an axis", (math.nan,) * 3
    r, lo, hi = pearson_interval(xs, ys, groups=groups, seed=seed)
    if math.isnan(r):
        return "r not shown: no variation on an axis", (r, lo, hi)
    return f"r = {r:.2f} [{lo:.2f}, {hi:.2f}] (95% bootstrap over runs)", (r, lo, hi)


def shift_plot(spec: ReportSpec, selection: Selection, path: Path) -> tuple[str, tuple[float, float, float]]:
    """One point per run: distribution shift vs forgetting (the retention drop); returns the correlation."""
    shift_metric, change_metric = spec.shift
    points = run_metrics(selection).reindex(columns=[shift_metric, change_metric]).dropna()
    xs, ys = points[shift_metric].tolist(), (-points[change_metric]).tolist()  # forgetting = -(retention change)
    plt, fig, ax = new_figure()
    for label, column in points.groupby(level="column", observed=True, sort=False):
        ax.scatter(column[shift_metric], -column[change_metric], label=label, s=18)
    text, correlation = correlation_text(xs, ys)
    ax.set_xlabel(f"{shift_metric} (distribution shift from the base model)")
    ax.set_ylabel(f"forgetting = -{change_metric}")
    save_figure(plt, fig, ax, f"{spec.name}: forgetting vs distribution shift, {models_of(selection)}; {text}, "
                        f"n = {len(xs)} runs", path)
    return text, correlation
