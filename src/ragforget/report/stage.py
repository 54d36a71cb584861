"""``stage=report``: query MLflow, aggregate seeds, write md/tex/csv and plots, log them as a report run.

    python run.py stage=report report=selfaug_table1
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from ragforget.errors import ConfigError
from ragforget.report.aggregate import aggregate, best_marks
from ragforget.report.compare import ItemLoader, comparison_lines, mlflow_item_scores, paired_comparisons
from ragforget.report.curves import (
    HistoryLoader,
    column_curves,
    curve_plot,
    mlflow_histories,
    shift_forgetting_plot,
    shift_forgetting_points,
)
from ragforget.report.plots import models_of, shift_plot, tradeoff_plot
from ragforget.report.publish import SUMMARY, embed_pages, publish
from ragforget.report.query import Selection, fetch_runs, select_runs
from ragforget.report.render import csv_text, latex, markdown, summary
from ragforget.report.spec import ReportSpec, report_spec
from ragforget.report.sweep import sweep_report
from ragforget.tracking.mlflow_run import TrackedRun
from ragforget.tracking.status import tracked_run
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Report:
    spec: ReportSpec
    selection: Selection
    pearson_r: float   # NaN where too few runs or too little spread to mean something
    pearson_lo: float
    pearson_hi: float
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


def curve_files(spec: ReportSpec, selection: Selection, histories: HistoryLoader, folder: Path) -> list[str]:
    """The forgetting-curve plots (those some run logged) and the every-point shift analysis; their notes."""
    curves = column_curves(selection, histories, sorted({*spec.curves, *spec.shift_curves}))
    drawn = [key for key in spec.curves
             if curve_plot(spec, curves, key, folder / f"curve_{key.replace('/', '_')}.png")]
    if not drawn:
        return ["forgetting curves: no run logged during/* (eval.during_training.every_n_steps)"]
    points = shift_forgetting_points(curves, *spec.shift_curves)
    text = shift_forgetting_plot(spec, points, *spec.shift_curves, folder / "shift_vs_forgetting_curves.png")
    return [f"forgetting curves drawn: {', '.join(drawn)}",
            f"forgetting ({spec.shift_curves[1]} since step 0) vs {spec.shift_curves[0]} at every curve point: {text}"]


def write_report(spec: ReportSpec, selection: Selection, out_dir: Path, items: ItemLoader | None = None,
                 histories: HistoryLoader | None = None) -> Report:
    """All files into a fresh folder that replaces ``out_dir`` only once complete (never half-written).

    ``items`` reads a run's scores item by item, for the paired differences from ``spec.compare_to``;
    ``histories`` a run's step metrics, for the forgetting curves.
    """
    table = aggregate(spec, selection)
    comparisons = paired_comparisons(spec, selection, items) if items is not None else []
    best = best_marks(spec, table)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    correlation_note, (r, r_lo, r_hi) = shift_plot(spec, selection, staging / "shift_vs_forgetting.png")
    points = tradeoff_plot(spec, selection, staging / "tradeoff.png")
    base_note, saved = base_eval_note(selection)
    per_column = ", ".join(f"{label} {len(runs)}" for label, runs in selection.used.items())
    notes = [f"{selection.runs_used} run(s) used: {per_column}; model(s): {models_of(selection)}",
             *gap_notes(spec, selection),
             f"forgetting vs distribution shift ({spec.shift[0]} against -{spec.shift[1]}): {correlation_note}",
             f"trade-off plot ({spec.tradeoff[1]} against {spec.tradeoff[0]}): {points} column(s) with both metrics",
             base_note]
    if histories is not None:
        notes += curve_files(spec, selection, histories, staging)
    compared = comparison_lines(comparisons)
    (staging / SUMMARY).write_text(summary(spec, table, best, compared), encoding="utf-8")
    (staging / "table.md").write_text(markdown(spec, table, best, notes, compared), encoding="utf-8")
    (staging / "table.tex").write_text(latex(spec, table, best), encoding="utf-8")
    (staging / "table.csv").write_text(csv_text(table), encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return Report(spec, selection, r, r_lo, r_hi, saved, out_dir)


def log_report(report: Report, cfg: DictConfig) -> str:
    """A run of its own (tag stage=report) in the reported experiment, with every file as an artifact."""
    run = TrackedRun(cfg.logger.tracking_uri, report.spec.experiment, str(Path(cfg.logger.artifact_location).resolve()))
    with tracked_run(run, f"report-{report.spec.name}", {"stage": "report", "report": report.spec.name}) as tracked:
        selection = report.selection
        tracked.log_metrics({
            "report/runs_used": selection.runs_used,
            "report/runs_missing": len(selection.missing), "report/runs_failed": len(selection.failed),
            "report/pearson_r": report.pearson_r, "report/pearson_r_lo": report.pearson_lo,
            "report/pearson_r_hi": report.pearson_hi, "report/base_eval_saved_s": report.base_eval_saved_s})
        tracked.log_artifact(report.out_dir, "report")
    return str(tracked.run_id)


def run_report(cfg: DictConfig) -> Report:
    if cfg.get("report") is None:
        raise ConfigError("report", "stage=report needs a report definition",
                          "add report=<name>, e.g. report=selfaug_table1 (see conf/report/)")
    raw = cast(dict[str, Any], OmegaConf.to_container(cfg.report, resolve=True))
    pages = embed_pages(raw.get("embed_in") or []) if cfg.paths.get("results_dir") else []
    if raw.get("columns") == "auto":  # report=sweep: columns, seeds and rows come from the runs
        filters = {"stage": "all", **({"sweep_id": str(raw["sweep_id"])} if raw.get("sweep_id") else {})}
        spec, runs = sweep_report(raw, fetch_runs(cfg.logger.tracking_uri, str(raw["experiment"]), filters))
    else:
        spec = report_spec(raw)
        runs = fetch_runs(cfg.logger.tracking_uri, spec.experiment, {"stage": "all", **spec.filter_tags})
    selection = select_runs(spec, runs)
    report = write_report(spec, selection, Path(cfg.paths.output_dir).resolve() / "reports" / spec.name,
                          mlflow_item_scores(cfg.logger.tracking_uri), mlflow_histories(cfg.logger.tracking_uri))
    run_id = log_report(report, cfg)
    if cfg.paths.get("results_dir"):
        publish(report.out_dir, Path(cfg.paths.results_dir), pages)
    log.info("report %s: %s (MLflow run %s)\n%s", spec.name, report.out_dir, run_id,
             (report.out_dir / "table.md").read_text(encoding="utf-8"))
    return report
