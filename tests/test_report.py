"""stage=report on a synthetic MLflow store: known numbers in, known tables, plots and gaps out."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ragforget.errors import ConfigError
from ragforget.report.aggregate import Cell, best_columns, pearson_r, summarize
from ragforget.report.spec import report_spec
from ragforget.report.stage import run_report
from ragforget.tracking.mlflow_run import TrackedRun
from conftest import compose_config
from test_cli import run_cli

SPEC = {
    "name": "toy", "title": "Toy table", "experiment": "toy_exp", "seeds": [0, 1, 2],
    "filter_tags": {"model": "m"},
    "columns": [{"label": "Base", "tags": {"method": "base"}},
                {"label": "A", "tags": {"method": "a"}},
                {"label": "B", "tags": {"method": "b"}},
                {"label": "C", "tags": {"method": "c"}}],
    "rows": [{"metric": "odqa/acc", "label": "acc"},
             {"metric": "shift/kl", "label": "KL", "scale": 1.0, "decimals": 3, "lower_is_better": True}],
    "exclude_from_best": ["Base"],
    "published": {"source": "Paper et al., Table 9", "columns": ["Base", "A"], "rows": {"acc": [1.5, 2.25]}},
}


def artifacts_beside(sqlite_uri: str) -> str:
    """An artifact root next to the test's store (MLflow's default, ./mlruns, would litter the checkout)."""
    return str(Path(sqlite_uri.removeprefix("sqlite:///")).parent / "mlartifacts")


def add_run(tracking_uri: str, method: str, seed: int, metrics: dict[str, float], status: str = "FINISHED",
            stage: str = "all", model: str = "m", error: str | None = None) -> None:
    run = TrackedRun(tracking_uri, "toy_exp", artifacts_beside(tracking_uri))
    run.start(f"{method}-s{seed}", {"method": method, "seed": str(seed), "stage": stage, "model": model})
    run.log_metrics(metrics)
    run.finish(status, error=error)


@pytest.fixture()
def toy_store(tmp_path: Path) -> str:
    """Base x3 seeds, A x3, B seeds 0-1 only (seed 2 missing), C seed 0 FAILED, plus runs to ignore."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for seed in range(3):
        add_run(uri, "base", seed, {"odqa/acc": 0.05, "base_eval/reused": float(seed > 0), "time/base_eval_s": 60.0})
    for seed, (acc, kl, delta) in enumerate([(0.1, 0.1, -0.01), (0.2, 0.2, -0.02), (0.3, 0.3, -0.03)]):
        add_run(uri, "a", seed, {"odqa/acc": acc, "shift/kl": kl, "retention/delta_macro_avg": delta,
                                 "retention/macro_avg": 0.4 + delta})
    for seed, (acc, kl, delta) in enumerate([(0.4, 0.4, -0.05), (0.6, 0.5, -0.04)]):
        add_run(uri, "b", seed, {"odqa/acc": acc, "shift/kl": kl, "retention/delta_macro_avg": delta,
                                 "retention/macro_avg": 0.4 + delta})
    add_run(uri, "c", 0, {}, status="FAILED", error="ValueError: Invalid learning rate: -1.0")
    add_run(uri, "a", 0, {"odqa/acc": 0.99}, model="other")            # another model: filtered out
    add_run(uri, "b", 2, {"odqa/acc": 0.99}, stage="synthesize")         # not a trained-and-evaluated run
    return uri


def report_cfg(tmp_path: Path, uri: str, spec: dict = SPEC):  # noqa: ANN201 - DictConfig
    cfg = compose_config([f"paths.output_dir={tmp_path}", f"logger.tracking_uri={uri}"])
    OmegaConf.set_struct(cfg, False)
    cfg.report = spec
    return cfg


def test_summary_statistics_by_hand() -> None:
    assert summarize([0.1, 0.2, 0.3], 100) == pytest.approx(Cell(20.0, 10.0, 3))
    assert summarize([0.4], 100) == Cell(40.0, None, 1)
    assert summarize([]) is None
    # x = .1 .. .5, y = .01 .02 .03 .05 .04: sxy = .009, sxx = .1, syy = .001 -> r = .009 / .01
    assert pearson_r([0.1, 0.2, 0.3, 0.4, 0.5], [0.01, 0.02, 0.03, 0.05, 0.04]) == pytest.approx(0.9)
    assert math.isnan(pearson_r([1.0, 2.0], [1.0, 2.0]))
    assert math.isnan(pearson_r([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_best_column_respects_direction_ties_and_exclusions() -> None:
    spec = report_spec(SPEC)
    table = {"acc": {"Base": Cell(99.0, None, 1), "A": Cell(20.0, 1.0, 3), "B": Cell(20.001, None, 1),
                     "C": Cell(10.0, None, 1)},
             "KL": {"Base": Cell(0.0, None, 1), "A": Cell(0.2, None, 1), "B": Cell(0.45, None, 1), "C": None}}
    best = best_columns(spec, table)
    assert best == {"acc": {"A", "B"}, "KL": {"A"}}  # 20.00 ties at 2 decimals; Base is excluded

    # every column ties (Base excluded): nothing is bold; a lone column is still the best
    table["acc"] = {"Base": Cell(99.0, None, 1), **{label: Cell(20.0, None, 1) for label in "ABC"}}
    table["KL"] = {"Base": Cell(0.0, None, 1), "A": Cell(0.2, None, 1), "B": None, "C": None}
    assert best_columns(spec, table) == {"acc": set(), "KL": {"A"}}


def test_report_from_a_synthetic_store(tmp_path: Path, toy_store: str) -> None:
    report = run_report(report_cfg(tmp_path, toy_store))
    out = tmp_path / "reports" / "toy"
    assert report.out_dir == out
    assert sorted(p.name for p in out.iterdir()) == [
        "shift_vs_forgetting.png", "table.csv", "table.md", "table.tex", "tradeoff.png"]

    md = (out / "table.md").read_text()
    assert "| acc | 5.00 ± 0.00 | 20.00 ± 10.00 | **50.00 ± 14.14** | – |" in md
    assert "| KL | – | **0.200 ± 0.100** | 0.450 ± 0.071 | – |" in md
    assert "### Published, not regenerated: Paper et al., Table 9" in md and "| acc | 1.50 | 2.25 |" in md
    assert "MISSING B, seed 2: no FINISHED run with tags.method=b" in md
    assert "MISSING C, seed 1" in md and "MISSING C, seed 2" in md
    assert "FAILED C, seed 0" in md and "Invalid learning rate: -1.0" in md
    assert "Pearson r = 0.900" in md
    assert "trade-off plot (odqa/acc against retention/macro_avg): 2 column(s) with both metrics" in md
    assert "computed by 1 run(s), reused from the cache by 2 (saved 120 s" in md

    tex = (out / "table.tex").read_text()
    assert r"\textbf{50.00 $\pm$ 14.14}" in tex and r"\begin{tabular}{lrrrr}" in tex
    rows = list(csv.DictReader((out / "table.csv").open()))
    b_acc = next(r for r in rows if r["column"] == "B" and r["metric"] == "odqa/acc")
    assert float(b_acc["mean"]) == pytest.approx(50.0) and float(b_acc["std"]) == pytest.approx(200 ** 0.5)
    assert b_acc["n"] == "2"
    assert next(r for r in rows if r["column"] == "C" and r["metric"] == "odqa/acc")["n"] == "0"

    client = MlflowClient(tracking_uri=toy_store)
    (logged,) = client.search_runs([client.get_experiment_by_name("toy_exp").experiment_id],
                                   filter_string="tags.stage = 'report'")
    assert logged.data.tags["report"] == "toy" and logged.info.status == "FINISHED"
    assert logged.data.metrics["report/runs_missing"] == 3 and logged.data.metrics["report/runs_failed"] == 1
    assert logged.data.metrics["report/pearson_r"] == pytest.approx(0.9)
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id, "report")}
    assert "report/table.md" in artifacts and "report/tradeoff.png" in artifacts

    # A second report replaces the folder whole and does not count the first report run as a job.
    run_report(report_cfg(tmp_path, toy_store))
    assert "MISSING B, seed 2" in (out / "table.md").read_text()


def test_bad_report_configs_name_the_key(tmp_path: Path, toy_store: str) -> None:
    with pytest.raises(ConfigError, match="'report'"):
        run_report(compose_config([f"paths.output_dir={tmp_path}", "stage=report"]))
    with pytest.raises(ConfigError, match=r"report.published.rows.acc"):
        report_spec({**SPEC, "published": {"source": "x", "columns": ["Base"], "rows": {"acc": [1.0, 2.0]}}})
    with pytest.raises(ConfigError, match=r"report.columns\[0\].label"):
        report_spec({**SPEC, "columns": [{"tags": {"method": "a"}}]})


def test_report_command_on_the_shipped_table1_config(tmp_path: Path) -> None:
    """`python run.py stage=report report=selfaug_table1` over a store holding only two of its columns."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for method, acc in (("base", 0.12), ("selfaug", 0.2)):
        run = TrackedRun(uri, "selfaug_table1", artifacts_beside(uri))
        run.start(f"{method}-s0", {"method": method, "seed": "0", "stage": "all", "model": "smollm2_135m",
                                   "dataset": "squad_open"})
        run.log_metrics({"odqa/acc": acc, "retention/macro_avg": 0.4})
        run.finish("FINISHED")
    run_cli("stage=report", "report=selfaug_table1", f"paths.output_dir={tmp_path}")
    md = (tmp_path / "reports" / "selfaug_table1" / "table.md").read_text()
    assert "| ODQA acc | 12.00 | – | – | – | – | – | **20.00** | – |" in md
    assert md.count("MISSING") == 3 * 8 - 2
    assert "### Published, not regenerated: Huang et al. 2025 (SelfAug), Table 1" in md
    assert "| IFEval | 71.90 | 45.10 | 48.80 | 58.04 | 54.71 | 63.77 | 62.11 |" in md
