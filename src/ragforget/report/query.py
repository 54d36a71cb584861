"""Select a report's runs from MLflow: one run per (column, seed), and what is missing or failed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ragforget.report.spec import Column, ReportSpec


@dataclass(frozen=True)
class RunRecord:
    """What a report needs of one MLflow run."""

    run_id: str
    name: str
    status: str
    start_time: int
    tags: Mapping[str, str]
    params: Mapping[str, str]
    metrics: Mapping[str, float]

    @property
    def seed(self) -> str:
        return self.tags.get("seed", self.params.get("seed", ""))

    @property
    def error(self) -> str:
        return self.tags.get("error", "(no error message recorded)")


@dataclass
class Selection:
    """The runs a report uses, per column label, and the gaps: missing (column, seed) and failed runs."""

    used: dict[str, list[RunRecord]] = field(default_factory=dict)
    missing: list[tuple[Column, str]] = field(default_factory=list)
    failed: list[tuple[str, RunRecord]] = field(default_factory=list)
    superseded: int = 0       # older finished runs of a (column, seed) that a newer one replaced

    @property
    def runs_used(self) -> int:
        return sum(len(runs) for runs in self.used.values())


def fetch_runs(tracking_uri: str, experiment: str, filter_tags: Mapping[str, str]) -> list[RunRecord]:
    """Every run of ``experiment`` carrying ``filter_tags`` (MLflow's search pages through them; a missing
    experiment gives none, with MLflow's warning)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)  # the fluent search, the one that pages, reads the global URI
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in filter_tags.items())
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string=query, output_format="list")
    return [RunRecord(run.info.run_id, run.info.run_name or run.info.run_id, run.info.status, run.info.start_time or 0,
                      dict(run.data.tags), dict(run.data.params), dict(run.data.metrics)) for run in runs]


def select_runs(spec: ReportSpec, runs: list[RunRecord]) -> Selection:
    """The newest FINISHED run per (column, seed); failed runs and empty cells are listed, not skipped."""
    selection = Selection()
    for column in spec.columns:
        mine = [r for r in runs if column.matches(r.tags, r.params)]
        selection.used[column.label] = []
        for seed in spec.seeds:
            of_seed = sorted((r for r in mine if r.seed == seed), key=lambda r: r.start_time, reverse=True)
            finished = [r for r in of_seed if r.status == "FINISHED"]
            if finished:
                selection.used[column.label].append(finished[0])
                selection.superseded += len(finished) - 1
            else:
                failed = [r for r in of_seed if r.status == "FAILED"]
                selection.failed += [(column.label, r) for r in failed]
                if not failed:
                    selection.missing.append((column, seed))
    return selection

