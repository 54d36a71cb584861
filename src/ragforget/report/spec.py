"""A report's definition (``conf/report/*.yaml``): which runs make which column, which metrics are rows.

Runs are selected by MLflow tags and params only; numbers are never typed into a report config except
the paper's own published table, which is shown beside ours and labelled as the paper's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ragforget.errors import ConfigError


@dataclass(frozen=True)
class Column:
    """One column: the runs whose tags and params all equal these values (one run per seed)."""

    label: str
    tags: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)

    def matches(self, tags: Mapping[str, str], params: Mapping[str, str]) -> bool:
        # Post-hoc variant runs (wise_ft's w=0.5, ...) belong only to columns that ask for a variant.
        if "variant" in tags and "variant" not in self.tags:
            return False
        return (all(tags.get(k) == v for k, v in self.tags.items())
                and all(params.get(k) == v for k, v in self.params.items()))

    def describe(self) -> str:
        parts = [f"tags.{k}={v}" for k, v in self.tags.items()] + [f"params.{k}={v}" for k, v in self.params.items()]
        return ", ".join(parts) or "(all runs)"


@dataclass(frozen=True)
class Row:
    """One metric row; ``scale`` turns fractions into the paper's percentages."""

    metric: str
    label: str
    scale: float = 100.0
    decimals: int = 2
    lower_is_better: bool = False


@dataclass(frozen=True)
class PublishedTable:
    """The paper's own numbers (from ../shared/METHODS.md), shown as published, never recomputed."""

    source: str
    columns: list[str]
    rows: dict[str, list[float]]


@dataclass(frozen=True)
class ReportSpec:
    name: str
    title: str
    experiment: str                      # the MLflow experiment holding the runs
    seeds: list[str]
    columns: list[Column]
    rows: list[Row]
    filter_tags: Mapping[str, str] = field(default_factory=dict)   # every selected run has these
    exclude_from_best: list[str] = field(default_factory=list)     # e.g. the base model's column
    tradeoff: tuple[str, str] = ("retention/macro_avg", "odqa/acc")  # (x, y) of the trade-off plot
    shift: tuple[str, str] = ("shift/kl", "retention/delta_macro_avg")  # (distribution shift, retention change)
    published: PublishedTable | None = None
    # Forgetting curves (during/* step metrics): each drawn per column, and (shift, forgetting measure)
    # paired at every step of every run for the shift-vs-forgetting analysis.
    curves: tuple[str, ...] = ("during/shift_kl", "during/wiki_ppl/bits_per_byte", "during/hhh_alignment/gold_logprob")
    shift_curves: tuple[str, str] = ("during/shift_kl", "during/wiki_ppl/bits_per_byte")
    compare_to: str | None = None        # a column label: every other column's paired difference from it
    compare: tuple[str, ...] = ("odqa/acc", "retention/macro_avg")   # the measures compared


def _strings(mapping: Mapping[str, Any] | None) -> dict[str, str]:
    """Tag and param values as MLflow stores them (strings)."""
    return {str(k): str(v) for k, v in (mapping or {}).items()}


def report_spec(raw: Mapping[str, Any]) -> ReportSpec:
    """Build a spec from the composed ``report`` config, naming the key of anything malformed."""
    for key in ("name", "experiment", "columns", "rows"):
        if not raw.get(key):
            raise ConfigError(f"report.{key}", "is missing or empty", "see conf/report/selfaug_table1.yaml")
    columns = []
    for i, column in enumerate(raw["columns"]):
        if "label" not in column:
            raise ConfigError(f"report.columns[{i}].label", "is missing", "each column needs a label and tags")
        columns.append(Column(str(column["label"]), _strings(column.get("tags")), _strings(column.get("params"))))
    labels = [c.label for c in columns]
    if len(set(labels)) != len(labels):
        raise ConfigError("report.columns", f"column labels repeat: {labels}", "give each column its own label")
    rows = []
    for i, row in enumerate(raw["rows"]):
        if "metric" not in row:
            raise ConfigError(f"report.rows[{i}].metric", "is missing", "name an MLflow metric, e.g. odqa/acc")
        rows.append(Row(metric=str(row["metric"]), label=str(row.get("label", row["metric"])),
                        scale=float(row.get("scale", 100.0)), decimals=int(row.get("decimals", 2)),
                        lower_is_better=bool(row.get("lower_is_better", False))))
    row_labels = [row.label for row in rows]
    if len(set(row_labels)) != len(row_labels):
        raise ConfigError("report.rows", f"row labels repeat: {row_labels}", "give each row its own label")
    published = None
    if raw.get("published"):
        pub = raw["published"]
        for label, values in pub["rows"].items():
            if len(values) != len(pub["columns"]):
                raise ConfigError(f"report.published.rows.{label}",
                                  f"has {len(values)} values for {len(pub['columns'])} columns",
                                  "one value per published column")
        published = PublishedTable(str(pub["source"]), [str(c) for c in pub["columns"]],
                                   {str(k): [float(v) for v in vals] for k, vals in pub["rows"].items()})
    unknown = [label for label in raw.get("exclude_from_best") or [] if label not in labels]
    if unknown:
        raise ConfigError("report.exclude_from_best", f"{unknown} are not column labels", f"choose among {labels}")
    compare_to = raw.get("compare_to")
    if compare_to is not None and str(compare_to) not in labels:
        raise ConfigError("report.compare_to", f"'{compare_to}' is not a column label", f"choose among {labels}")
    plots = raw.get("plots") or {}
    return ReportSpec(
        name=str(raw["name"]), title=str(raw.get("title", raw["name"])), experiment=str(raw["experiment"]),
        seeds=[str(s) for s in raw.get("seeds") or [0]], columns=columns, rows=rows,
        filter_tags=_strings(raw.get("filter_tags")),
        exclude_from_best=[str(x) for x in raw.get("exclude_from_best") or []],
        tradeoff=tuple(plots.get("tradeoff", ReportSpec.tradeoff)),
        shift=tuple(plots.get("shift", ReportSpec.shift)),
        curves=tuple(plots.get("curves", ReportSpec.curves)),
        shift_curves=tuple(plots.get("shift_curves", ReportSpec.shift_curves)),
        published=published, compare_to=None if compare_to is None else str(compare_to),
        compare=tuple(str(m) for m in raw.get("compare") or ReportSpec.compare))
