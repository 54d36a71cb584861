"""``stage=report``: query MLflow, aggregate seeds, write md/tex/csv and plots, log them as a report run.

    python run.py stage=report report=selfaug_table1
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ragforget.errors import ConfigError
from ragforget.report.aggregate import aggregate, best_columns
from ragforget.report.plots import shift_plot, tradeoff_plot
from ragforget.report.query import Selection, fetch_runs, select_runs
from ragforget.report.render import csv_text, latex, markdown
from ragforget.report.spec import ReportSpec, report_spec
from ragforget.tracking.mlflow_run import TrackedRun
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Report:
    spec: ReportSpec
    selection: Selection
    pearson_r: float
    base_eval_saved_s: float
    out_dir: Path


def base_eval_note(selection: Selection) -> tuple[str, float]:
    """How many runs reused the cached base-model evaluation, and the seconds that saved."""
    runs = [r for runs in selection.used.values() for r in runs if "base_eval/reused" in r.metrics]
    reused = [r for r in runs if r.metrics["base_eval/reused"] == 1.0]
    saved = sum(r.metrics.get("time/base_eval_s", 0.0) for r in reused)
    computed = len(runs) - len(reused)
    return (f"base-model evaluation: computed by {computed} run(s), reused from the cache by {len(reused)} "
            f"(saved {saved:.0f} s of evaluation)", saved)


def gap_notes(spec: ReportSpec, selection: Selection) -> list[str]:
    notes = [f"MISSING {column.label}, seed {seed}: no FINISHED run with {column.describe()}"
             for column, seed in selection.missing]
    notes += [f"FAILED {label}, seed {run.seed}: run {run.run_id} ({run.name}): {run.error[:300]}"
              for label, run in selection.failed]
    if selection.superseded:
        notes.append(f"{selection.superseded} older FINISHED run(s) of a (column, seed) were replaced by newer ones")
    return notes


def write_report(spec: ReportSpec, selection: Selection, out_dir: Path) -> Report:
    """All files into a fresh folder that replaces ``out_dir`` only once complete (never half-written)."""
    table = aggregate(spec, selection)
    best = best_columns(spec, table)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    r = shift_plot(spec, selection, staging / "shift_vs_forgetting.png")
    points = tradeoff_plot(spec, selection, staging / "tradeoff.png")
    base_note, saved = base_eval_note(selection)
    per_column = ", ".join(f"{label} {len(runs)}" for label, runs in selection.used.items())
    notes = [f"{selection.runs_used} run(s) used: {per_column}",
             *gap_notes(spec, selection),
             f"forgetting vs distribution shift ({spec.shift[0]} against -{spec.shift[1]}): Pearson r = "
             + ("n/a (fewer than 3 runs)" if math.isnan(r) else f"{r:.3f}"),
             f"trade-off plot ({spec.tradeoff[1]} against {spec.tradeoff[0]}): {points} column(s) with both metrics",
             base_note]
    (staging / "table.md").write_text(markdown(spec, table, best, notes), encoding="utf-8")
    (staging / "table.tex").write_text(latex(spec, table, best), encoding="utf-8")
    (staging / "table.csv").write_text(csv_text(spec, table), encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return Report(spec, selection, r, saved, out_dir)


def log_report(report: Report, cfg: DictConfig) -> str:
    """A run of its own (tag stage=report) in the reported experiment, with every file as an artifact."""
    tracked = TrackedRun(cfg.logger.tracking_uri, report.spec.experiment,
                         str(Path(cfg.logger.artifact_location).resolve()))
    run_id = tracked.start(f"report-{report.spec.name}", {"stage": "report", "report": report.spec.name})
    selection = report.selection
    tracked.log_metrics({
        "report/runs_used": selection.runs_used,
        "report/runs_missing": len(selection.missing), "report/runs_failed": len(selection.failed),
        "report/pearson_r": report.pearson_r, "report/base_eval_saved_s": report.base_eval_saved_s})
    tracked.log_artifact(report.out_dir, "report")
    tracked.finish("FINISHED")
    return run_id


def run_report(cfg: DictConfig) -> Report:
    if cfg.get("report") is None:
        raise ConfigError("report", "stage=report needs a report definition",
                          "add report=<name>, e.g. report=selfaug_table1 (see conf/report/)")
    raw = OmegaConf.to_container(cfg.report, resolve=True)
    assert isinstance(raw, dict)
    spec = report_spec(raw)
    runs = fetch_runs(cfg.logger.tracking_uri, spec.experiment, {"stage": "all", **spec.filter_tags})
    selection = select_runs(spec, runs)
    report = write_report(spec, selection, Path(cfg.paths.output_dir).resolve() / "reports" / spec.name)
    run_id = log_report(report, cfg)
    log.info("report %s: %s (MLflow run %s)\n%s", spec.name, report.out_dir, run_id,
             (report.out_dir / "table.md").read_text(encoding="utf-8"))
    return report
