"""Forgetting curves in a report: the during/* step metrics of each run, per column over seeds.

``curve_plot`` draws a measure against the training step, the mean over a column's seeds with a band from
their minimum to their maximum. ``shift_forgetting_points`` pairs, at every logged step of every run, the
distribution shift with the forgetting so far (the rise of bits per byte, or the fall of a gold
log-probability, since step 0): SelfAug's shift-vs-forgetting analysis on all the points, not one per run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ragforget.report.plots import correlation_text, new_figure, save_figure
from ragforget.report.query import Selection
from ragforget.report.spec import ReportSpec

History = dict[int, float]                                   # step -> value
HistoryLoader = Callable[[str, str], History]                # (run id, metric) -> its history
RunCurves = dict[str, History]                               # one run: metric -> history


def mlflow_histories(tracking_uri: str) -> HistoryLoader:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)

    def load(run_id: str, key: str) -> History:
        return {m.step: m.value for m in client.get_metric_history(run_id, key)}

    return load


def column_curves(selection: Selection, load: HistoryLoader, keys: Sequence[str]) -> dict[str, list[RunCurves]]:
    """Per column, each run's histories of ``keys`` (empty for a key the run did not log)."""
    return {label: [{key: load(run.run_id, key) for key in keys} for run in runs]
            for label, runs in selection.used.items()}


def curve_plot(spec: ReportSpec, curves: Mapping[str, Sequence[RunCurves]], key: str, path: Path) -> int:
    """Mean over seeds per step, with a min-max band; returns the columns drawn (0: no file written)."""
    columns = {label: [run[key] for run in runs if run.get(key)] for label, runs in curves.items()}
    columns = {label: histories for label, histories in columns.items() if histories}
    if not columns:
        return 0
    plt, fig, ax = new_figure()
    for label, histories in columns.items():
        steps = sorted(set.intersection(*(set(h) for h in histories)))
        values = np.array([[h[step] for step in steps] for h in histories])
        ax.plot(steps, values.mean(axis=0), marker="o", markersize=3, label=f"{label} (n={len(histories)})")
        if len(histories) > 1:
            ax.fill_between(steps, values.min(axis=0), values.max(axis=0), alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel(key)
    save_figure(plt, fig, ax, f"{spec.name}: {key} during training, mean over seeds (band: min-max)", path)
    return len(columns)


def forgetting_sign(key: str) -> float:
    """+1 where a higher value is worse (bits per byte, NLL), -1 where higher is better (log-probabilities)."""
    return 1.0 if key.endswith(("bits_per_byte", "nll")) else -1.0


def shift_forgetting_points(curves: Mapping[str, Sequence[RunCurves]], shift_key: str,
                            measure_key: str) -> dict[str, list[tuple[float, float, str]]]:
    """Per column, (shift at step s, forgetting from step 0 to s, the run's index) for every step s > 0 of
    every run with both curves."""
    points: dict[str, list[tuple[float, float, str]]] = {}
    for label, runs in curves.items():
        for index, run in enumerate(runs):
            shift, measure = run.get(shift_key, {}), run.get(measure_key, {})
            if 0 in measure:
                points.setdefault(label, []).extend(
                    (shift[step], forgetting_sign(measure_key) * (measure[step] - measure[0]), f"{label}#{index}")
                    for step in sorted(shift.keys() & measure.keys()) if step > 0)
    return points


def shift_forgetting_plot(spec: ReportSpec, points: Mapping[str, Sequence[tuple[float, float, str]]],
                          shift_key: str, measure_key: str, path: Path) -> str:
    """Every curve point of every run; returns the correlation (bootstrap over runs) as text."""
    plt, fig, ax = new_figure()
    for label, column in points.items():
        ax.scatter([p[0] for p in column], [p[1] for p in column], s=14, label=label)
    every = [p for column in points.values() for p in column]
    text, _ = correlation_text([p[0] for p in every], [p[1] for p in every], groups=[p[2] for p in every])
    ax.set_xlabel(f"{shift_key} (distribution shift at that step)")
    ax.set_ylabel(f"forgetting: change of {measure_key} since step 0 (worse is up)")
    save_figure(plt, fig, ax, f"{spec.name}: forgetting vs shift at every curve point; {text}, {len(every)} points "
                        f"from {len({p[2] for p in every})} runs", path)
    return text
