"""The report's two figures: task accuracy vs retention, and forgetting vs distribution shift."""

from __future__ import annotations

import math
from pathlib import Path

from ragforget.report.aggregate import paired_points, pearson_r, summarize
from ragforget.report.query import Selection, metric_values
from ragforget.report.spec import ReportSpec


def _figure():  # noqa: ANN202 - matplotlib types
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on the machines this runs on
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(6, 4.5))


def tradeoff_plot(spec: ReportSpec, selection: Selection, path: Path) -> int:
    """One point per column: mean (x, y) over seeds, error bars = std over seeds; returns the points drawn."""
    x_metric, y_metric = spec.tradeoff
    plt, fig, ax = _figure()
    drawn = 0
    for label, runs in selection.used.items():
        x, y = summarize(metric_values(runs, x_metric)), summarize(metric_values(runs, y_metric))
        if x is None or y is None:
            continue
        ax.errorbar(x.mean, y.mean, xerr=x.std or 0.0, yerr=y.std or 0.0, fmt="o", capsize=3, label=label)
        ax.annotate(label, (x.mean, y.mean), textcoords="offset points", xytext=(5, 5), fontsize=8)
        drawn += 1
    ax.set_xlabel(f"{x_metric} (general ability kept)")
    ax.set_ylabel(f"{y_metric} (task)")
    ax.set_title(f"{spec.title}: task vs retention (mean ± std over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return drawn


def shift_plot(spec: ReportSpec, selection: Selection, path: Path) -> float:
    """One point per run: distribution shift vs forgetting (the retention drop); returns Pearson r."""
    shift_metric, change_metric = spec.shift
    plt, fig, ax = _figure()
    xs: list[float] = []
    ys: list[float] = []
    for label, runs in selection.used.items():
        points = paired_points(runs, shift_metric, change_metric)
        if not points:
            continue
        px, py = [p[0] for p in points], [-p[1] for p in points]  # forgetting = minus the retention change
        ax.scatter(px, py, label=label, s=18)
        xs += px
        ys += py
    r = pearson_r(xs, ys)
    shown = "n/a" if math.isnan(r) else f"{r:.2f}"
    ax.set_xlabel(f"{shift_metric} (distribution shift from the base model)")
    ax.set_ylabel(f"forgetting = -{change_metric}")
    ax.set_title(f"Forgetting vs distribution shift: Pearson r = {shown} (n = {len(xs)} runs)", fontsize=9)
    if xs:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return r
