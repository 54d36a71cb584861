"""Seeds to mean ± std per (row, column), and the best column of each row. Pure functions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ragforget.evaluation.statistics import t_interval
from ragforget.report.query import RunRecord, Selection, metric_values
from ragforget.report.spec import ReportSpec, Row


@dataclass(frozen=True)
class Cell:
    """A metric over seeds, already scaled; ``std`` is the sample std (ddof=1) and (lo, hi) the 95%
    Student-t interval of the mean, None for one seed."""

    mean: float
    std: float | None
    n: int
    lo: float | None = None
    hi: float | None = None


def summarize(values: Sequence[float], scale: float = 1.0) -> Cell | None:
    if not values:
        return None
    scaled = [v * scale for v in values]
    mean, lo, hi = t_interval(scaled)
    if len(scaled) == 1:
        return Cell(mean, None, 1)
    std = math.sqrt(sum((v - mean) ** 2 for v in scaled) / (len(scaled) - 1))
    return Cell(mean, std, len(scaled), lo, hi)


Table = dict[str, dict[str, Cell | None]]   # row label -> column label -> cell


def aggregate(spec: ReportSpec, selection: Selection) -> Table:
    return {row.label: {label: summarize(metric_values(runs, row.metric), row.scale)
                        for label, runs in selection.used.items()}
            for row in spec.rows}


def best_columns(spec: ReportSpec, table: Table) -> dict[str, set[str]]:
    """Per row, the column(s) with the best mean (ties share it), among columns not excluded.

    A row where every column ties has no best: bolding all of them would mark nothing.
    """
    best: dict[str, set[str]] = {}
    for row in spec.rows:
        cells = {label: cell for label, cell in table[row.label].items()
                 if cell is not None and label not in spec.exclude_from_best}
        if not cells:
            best[row.label] = set()
            continue
        pick = min if row.lower_is_better else max
        target = round(pick(c.mean for c in cells.values()), row.decimals)
        winners = {label for label, c in cells.items() if round(c.mean, row.decimals) == target}
        best[row.label] = winners if len(winners) < len(cells) or len(cells) == 1 else set()
    return best


def paired_points(runs: Sequence[RunRecord], x: str, y: str) -> list[tuple[float, float, RunRecord]]:
    """(x, y) of every run that has both metrics."""
    return [(r.metrics[x], r.metrics[y], r) for r in runs if x in r.metrics and y in r.metrics]


def format_cell(cell: Cell | None, row: Row) -> str:
    """'12.34 ± 0.56 [11.1, 13.6]': mean ± std over seeds [95% t interval] (the value alone for one seed;
    '–' when no run has the metric)."""
    if cell is None:
        return "–"
    text = f"{cell.mean:.{row.decimals}f}"
    if cell.std is None:
        return text
    return f"{text} ± {cell.std:.{row.decimals}f} [{cell.lo:.{row.decimals}f}, {cell.hi:.{row.decimals}f}]"
