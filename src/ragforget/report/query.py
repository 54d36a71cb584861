"""Select a report's runs from MLflow: one run per (column, seed), and what is missing or failed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ragforget.report.spec import Column, ReportSpec
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


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
    """Every run of ``experiment`` carrying ``filter_tags`` (an MLflow search, paged)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        log.warning("MLflow experiment '%s' does not exist at %s: every run is missing", experiment, tracking_uri)
        return []
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in filter_tags.items())
    records: list[RunRecord] = []
    token: str | None = None
    while True:
        page = client.search_runs([found.experiment_id], filter_string=query, max_results=1000, page_token=token)
        records += [RunRecord(run.info.run_id, run.info.run_name or run.info.run_id, run.info.status,
                              run.info.start_time or 0, dict(run.data.tags), dict(run.data.params),
                              dict(run.data.metrics)) for run in page]
        token = page.token
        if not token:
            return records


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


def metric_values(runs: list[RunRecord], metric: str) -> list[float]:
    return [r.metrics[metric] for r in runs if metric in r.metrics]

