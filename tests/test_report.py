"""stage=report on a synthetic MLflow store: known numbers in, known tables, plots and gaps out."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import compose_config, run_cli
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ragforget.errors import ConfigError
from ragforget.report.aggregate import best_marks, over_seeds, run_metrics
from ragforget.report.plots import correlation_text
from ragforget.report.query import RunRecord, Selection
from ragforget.report.spec import report_spec
from ragforget.report.stage import run_report
from ragforget.tracking.mlflow_run import TrackedRun

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


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every markdown table line (header, separator and body), padding stripped."""
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("|")]


def record(run_id: str, metrics: dict[str, float], seed: str = "0") -> RunRecord:
    return RunRecord(run_id, run_id, "FINISHED", 0, {"seed": seed}, {}, metrics)


def report_cfg(tmp_path: Path, uri: str, spec: dict = SPEC):  # noqa: ANN201 - DictConfig
    cfg = compose_config([f"paths.output_dir={tmp_path}", f"logger.tracking_uri={uri}"])
    OmegaConf.set_struct(cfg, False)
    cfg.report = spec
    return cfg


def test_summary_statistics_by_hand() -> None:
    # A (10, 20, 30): sd 10, t(0.975, 2 df) = 4.302653 x 10 / sqrt(3) = 24.8414 either side of 20;
    # B one seed: its value, no spread; C no run with the metric; D no run at all.
    selection = Selection(used={"A": [record(f"a{i}", {"m": v}, str(i)) for i, v in enumerate([0.1, 0.2, 0.3])],
                                "B": [record("b0", {"m": 0.4})], "C": [record("c0", {"other": 1.0})], "D": []})
    stats = over_seeds(run_metrics(selection), "m", 100)
    assert list(stats.index) == ["A", "B", "C", "D"] and list(stats["n"]) == [3, 1, 0, 0]
    assert stats.loc["A", ["mean", "std"]].tolist() == [pytest.approx(20.0), pytest.approx(10.0)]
    assert stats.loc["A", ["lo", "hi"]].tolist() == [pytest.approx(-4.8414, abs=1e-4), pytest.approx(44.8414, abs=1e-4)]
    assert stats.loc["B", "mean"] == pytest.approx(40.0) and stats.loc["B", ["std", "lo", "hi"]].isna().all()
    assert stats.loc[["C", "D"], ["mean", "std", "lo", "hi"]].isna().all().all()
    # x = .1 .. .5, y = .01 .02 .03 .05 .04: sxy = .009, sxx = .1, syy = .001 -> r = .009 / .01
    text, (r, lo, hi) = correlation_text([0.1, 0.2, 0.3, 0.4, 0.5], [0.01, 0.02, 0.03, 0.05, 0.04])
    assert r == pytest.approx(0.9) and lo <= r <= hi and text.startswith("r = 0.90 [")
    # too few runs, or (the r = -1.00 of a near-constant sample) too few distinct values: no r is shown
    assert correlation_text([1.0, 2.0], [1.0, 2.0])[0].startswith("r not shown: 2 run(s)")
    few_values = correlation_text([0.2189, 0.2189, 0.2189, 0.2190, 0.2190], [0.1, 0.2, 0.3, 0.4, 0.5])
    assert few_values[0].startswith("r not shown: fewer than 3 distinct") and math.isnan(few_values[1][0])


def test_best_column_respects_direction_ties_and_exclusions() -> None:
    spec = report_spec(SPEC)

    def best(means: dict[str, dict[str, float]]) -> set[tuple[str, str]]:
        table = pd.DataFrame([(row, column, mean) for row, columns in means.items() for column, mean in columns.items()],
                             columns=["row", "column", "mean"])
        return set(table.loc[best_marks(spec, table), ["row", "column"]].itertuples(index=False, name=None))

    # 20.00 ties at 2 decimals; Base is excluded; NaN: no run has the metric
    assert best({"acc": {"Base": 99.0, "A": 20.0, "B": 20.001, "C": 10.0},
                 "KL": {"Base": 0.0, "A": 0.2, "B": 0.45, "C": np.nan}}) == {("acc", "A"), ("acc", "B"), ("KL", "A")}
    # every column ties (Base excluded): nothing is bold; a lone column is still the best
    assert best({"acc": {"Base": 99.0, "A": 20.0, "B": 20.0, "C": 20.0},
                 "KL": {"Base": 0.0, "A": 0.2, "B": np.nan, "C": np.nan}}) == {("KL", "A")}


def test_report_from_a_synthetic_store(tmp_path: Path, toy_store: str) -> None:
    report = run_report(report_cfg(tmp_path, toy_store))
    out = tmp_path / "reports" / "toy"
    assert report.out_dir == out
    assert sorted(p.name for p in out.iterdir()) == [
        "shift_vs_forgetting.png", "summary.md", "table.csv", "table.md", "table.tex", "tradeoff.png"]

    md = (out / "table.md").read_text()
    regenerated, published = md.split("### Published, not regenerated: Paper et al., Table 9")
    assert regenerated.startswith((out / "summary.md").read_text())  # the summary: title, table, comparisons
    rows = table_rows(regenerated)
    assert rows[0] == ["metric", "Base", "A", "B", "C"]
    assert re.fullmatch(r":-+", rows[1][0]) and all(re.fullmatch(r"-+:", cell) for cell in rows[1][1:])  # numbers right
    # B's two seeds (40, 60): t(0.975, 1 df) = 12.7062 x 14.142 / sqrt(2) = 127.06 either side of 50
    assert rows[2:] == [
        ["acc", "5.00 ± 0.00 [5.00, 5.00]", "20.00 ± 10.00 [-4.84, 44.84]", "**50.00 ± 14.14 [-77.06, 177.06]**", "–"],
        ["KL", "–", "**0.200 ± 0.100 [-0.048, 0.448]**", "0.450 ± 0.071 [-0.185, 1.085]", "–"]]
    assert [row for row in table_rows(published) if row[0] != "metric" and not row[0].startswith(":")] == [
        ["acc", "1.50", "2.25"]]
    assert "MISSING B, seed 2: no FINISHED run with tags.method=b" in md
    assert "MISSING C, seed 1" in md and "MISSING C, seed 2" in md
    assert "FAILED C, seed 0" in md and "Invalid learning rate: -1.0" in md
    assert "r = 0.90 [" in md
    assert "trade-off plot (odqa/acc against retention/macro_avg): 2 column(s) with both metrics" in md
    assert "computed by 1 run(s), reused from the cache by 2 (saved 120 s" in md

    tex = (out / "table.tex").read_text()
    assert r"\textbf{50.00 $\pm$ 14.14 [-77.06, 177.06]}" in tex and r"\begin{tabular}{lrrrr}" in tex
    assert r"metric & Base & A & B & C \\" in tex and r"KL & -- & \textbf{0.200 $\pm$ 0.100 [-0.048, 0.448]}" in tex
    assert r"\caption{Toy table: regenerated from MLflow, mean $\pm$ std over seeds 0, 1, 2.}" in tex
    assert r"\caption{Published, not regenerated: Paper et al., Table 9.}" in tex and "acc & 1.50 & 2.25" in tex
    lines = list(csv.DictReader((out / "table.csv").open()))
    assert [(line["row"], line["column"]) for line in lines] == [(row, column) for row in ("acc", "KL")
                                                                 for column in ("Base", "A", "B", "C")]
    b_acc = next(r for r in lines if r["column"] == "B" and r["metric"] == "odqa/acc")
    assert float(b_acc["mean"]) == pytest.approx(50.0) and float(b_acc["std"]) == pytest.approx(200 ** 0.5)
    assert float(b_acc["lo"]) == pytest.approx(-77.062, abs=1e-3) and b_acc["n"] == "2"
    c_acc = next(r for r in lines if r["column"] == "C" and r["metric"] == "odqa/acc")
    assert (c_acc["mean"], c_acc["std"], c_acc["lo"], c_acc["n"]) == ("", "", "", "0")
    a_kl = next(r for r in lines if r["column"] == "A" and r["metric"] == "shift/kl")
    assert float(a_kl["mean"]) == pytest.approx(0.2) and a_kl["n"] == "3"  # KL keeps its scale of 1

    client = MlflowClient(tracking_uri=toy_store)
    (logged,) = client.search_runs([client.get_experiment_by_name("toy_exp").experiment_id],
                                   filter_string="tags.stage = 'report'")
    assert logged.data.tags["report"] == "toy" and logged.info.status == "FINISHED"
    assert {"mlflow.user", "mlflow.source.name", "mlflow.source.type"} <= logged.data.tags.keys()  # MLflow's own
    assert logged.data.metrics["report/runs_missing"] == 3 and logged.data.metrics["report/runs_failed"] == 1
    assert logged.data.metrics["report/pearson_r"] == pytest.approx(0.9)
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id, "report")}
    assert "report/table.md" in artifacts and "report/tradeoff.png" in artifacts

    # A second report replaces the folder whole and does not count the first report run as a job. With a
    # results folder it is also published there, and its summary fills the marked block of a page.
    page = tmp_path / "page.md"
    page.write_text("<!-- results:toy -->\n<!-- /results:toy -->\n")
    cfg = report_cfg(tmp_path, toy_store, {**SPEC, "embed_in": [str(page)]})
    cfg.paths.results_dir = str(tmp_path / "results")
    run_report(cfg)
    assert "MISSING B, seed 2" in (out / "table.md").read_text()
    assert (tmp_path / "results" / "toy" / "table.md").read_text() == (out / "table.md").read_text()
    assert (out / "summary.md").read_text().strip() in page.read_text()


def test_bad_report_configs_name_the_key(tmp_path: Path, toy_store: str) -> None:
    with pytest.raises(ConfigError, match="'report'"):
        run_report(compose_config([f"paths.output_dir={tmp_path}", "stage=report"]))
    with pytest.raises(ConfigError, match=r"report.published.rows.acc"):
        report_spec({**SPEC, "published": {"source": "x", "columns": ["Base"], "rows": {"acc": [1.0, 2.0]}}})
    with pytest.raises(ConfigError, match=r"report.columns\[0\].label"):
        report_spec({**SPEC, "columns": [{"tags": {"method": "a"}}]})
    with pytest.raises(ConfigError, match=r"'report.rows'.*row labels repeat"):
        report_spec({**SPEC, "rows": [{"metric": "odqa/acc", "label": "acc"}, {"metric": "odqa/f1", "label": "acc"}]})


def test_latex_escapes_cells_headers_and_captions() -> None:
    """Labels and titles come from configs: LaTeX's specials in them are escaped, ± and – become LaTeX's."""
    from ragforget.report.render import latex_table

    frame = pd.DataFrame({"50% & more": ["1.00 ± 0.10 [0.8, 1.2]", "–"]},
                         index=pd.Index(["ret_avg #1", "KL"], name="metric"))
    tex = latex_table(frame, "Table_1: 10% & ± #2", bold=pd.DataFrame({"50% & more": [True, False]}, index=frame.index))
    assert r"metric & 50\% \& more \\" in tex
    assert r"ret\_avg \#1 & \textbf{1.00 $\pm$ 0.10 [0.8, 1.2]} \\" in tex and r"KL & -- \\" in tex
    assert r"\caption{Table\_1: 10\% \& $\pm$ \#2}" in tex and r"\begin{tabular}{lr}" in tex


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
    rows = table_rows(md)
    assert ["ODQA acc", "12.00", "–", "–", "–", "–", "–", "**20.00**", "–"] in rows
    assert md.count("MISSING") == 3 * 8 - 2
    assert "### Published, not regenerated: Huang et al. 2025 (SelfAug), Table 1" in md
    assert ["IFEval", "71.90", "45.10", "48.80", "58.04", "54.71", "63.77", "62.11"] in rows


def test_plots_keep_plain_ticks_and_wrap_long_titles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Metrics that differ in the sixth decimal (0.218900, 0.218901) must not turn into '1e-6+2.189e-1'."""
    import matplotlib.pyplot as plt

    from ragforget.report import plots

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)  # keep the figure to look at it
    _, fig, ax = plots.new_figure()
    ax.plot([0.2189, 0.218901], [0.5, 0.500001])
    plots.save_figure(plt, fig, ax, "a title long enough to be cut off at the figure's edge " * 3, tmp_path / "p.png")
    fig.canvas.draw()
    assert kept == [fig] and (tmp_path / "p.png").exists()
    assert ax.xaxis.get_major_formatter().get_offset() == "" and ax.yaxis.get_major_formatter().get_offset() == ""
    assert ax.get_title().count("\n") >= 1


def test_override_items_split_between_overrides_only() -> None:
    from ragforget.report.sweep import override_items

    assert override_items("eval.retention.tasks=[a,b],method=sft,seed=1") == [
        "eval.retention.tasks=[a,b]", "method=sft", "seed=1"]
    assert override_items("(none)") == []


@pytest.mark.slow
def test_any_sweep_report_from_a_2x2_multirun(tmp_path: Path) -> None:
    """--multirun method=sft,selfaug seed=0,1, then report=sweep with the id the sweep printed."""
    from helpers import TINY

    sweep = run_cli("--multirun", "method=sft,selfaug", "seed=0,1", f"paths.output_dir={tmp_path}", *TINY,
                    "eval.during_training.every_n_steps=1", "eval.during_training.limit=2")
    printed = [line for line in (sweep.stdout + sweep.stderr).splitlines() if "report=sweep report.sweep_id=" in line]
    assert printed, "the sweep did not print its report command"
    sweep_id = printed[-1].split("report.sweep_id=")[1].split()[0]
    run_cli("stage=report", "report=sweep", f"report.sweep_id={sweep_id}", "report.compare_to='method=sft'",
            f"paths.output_dir={tmp_path}")
    md = (tmp_path / "reports" / f"sweep-{sweep_id}" / "table.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| metric"))
    assert "method=selfaug" in header and "method=sft" in header and "seed" not in header
    assert "wiki_ppl" in md and "ODQA acc" in md
    assert "4 run(s) used: method=selfaug 2, method=sft 2" in md
    # selfaug against sft on the same seeds and items, from each run's eval/item_scores.json artifact
    paired = table_rows(md.split("### Paired differences from method=sft")[1].split("###")[0])
    assert paired[0] == ["measure", "method=selfaug"] and [row[0] for row in paired[2:]] == [
        "odqa/acc", "retention/macro_avg"]
    # the forgetting curves of every run (steps 0, 1, 2), and the shift analysis over their 8 later points
    folder = tmp_path / "reports" / f"sweep-{sweep_id}"
    assert (folder / "curve_during_shift_kl.png").exists() and (folder / "shift_vs_forgetting_curves.png").exists()
    assert "at every curve point: r = " in md or "at every curve point: r not shown" in md


def test_paired_differences_between_columns_by_hand() -> None:
    """Column A against reference R over seeds 0 and 1, paired by seed and question.

    Seed 0: R answers (0, 0), A answers (1, 0): delta 0.5, resamples 0 / 0.5 / 1. Seed 1: both answer (1, 1):
    delta 0. The mean delta is 0.25 and its resamples are 0, 0.25 or 0.5: the interval is [0, 0.5], which
    does not exclude 0. On retention A gains 0.2 on every item of both tasks: +20.00 [+20.00, +20.00] *.
    """
    from ragforget.evaluation.statistics import ItemScores
    from ragforget.report.compare import comparison_lines, paired_comparisons

    def items(acc: list[float], retention: float) -> dict[str, ItemScores]:
        return {"odqa/acc": ItemScores(("q1", "q2"), tuple(acc), (1.0, 1.0)),
                **{f"retention/{task}": ItemScores(("i1", "i2"), (retention, retention + 0.1), (1.0, 1.0))
                   for task in ("a", "b")}}

    scores = {"r0": items([0, 0], 0.3), "a0": items([1, 0], 0.5), "r1": items([1, 1], 0.3), "a1": items([1, 1], 0.5)}
    selection = Selection(used={"R": [record("r0", {}, "0"), record("r1", {}, "1")],
                                "A": [record("a0", {}, "0"), record("a1", {}, "1")]})
    spec = report_spec({**SPEC, "columns": [{"label": "R"}, {"label": "A"}], "exclude_from_best": [], "compare_to": "R"})
    (acc, retention) = paired_comparisons(spec, selection, scores.get, resamples=20000)
    assert (acc.measure, acc.column, acc.reference, acc.seeds) == ("odqa/acc", "A", "R", 2)
    assert acc.delta.delta == pytest.approx(0.25) and (acc.delta.lo, acc.delta.hi) == (0.0, 0.5)
    assert retention.delta.delta == pytest.approx(0.2) and retention.delta.lo == pytest.approx(0.2)
    rows = table_rows("\n".join(comparison_lines([acc, retention])))
    assert rows[0] == ["measure", "A"] and rows[2:] == [["odqa/acc", "+25.00 [+0.00, +50.00]"],
                                                         ["retention/macro_avg", "+20.00 [+20.00, +20.00] *"]]


def test_shift_and_forgetting_pair_at_every_curve_step() -> None:
    from ragforget.report.curves import shift_forgetting_points

    run = {"during/shift_kl": {0: 0.0, 2: 0.1, 4: 0.3}, "during/wiki_ppl/bits_per_byte": {0: 1.0, 2: 1.25, 4: 1.5},
           "during/hhh_alignment/gold_logprob": {0: -2.0, 2: -2.5, 4: -3.0}}
    points = shift_forgetting_points({"A": [run]}, "during/shift_kl", "during/wiki_ppl/bits_per_byte")
    assert points == {"A": [(0.1, 0.25, "A#0"), (0.3, 0.5, "A#0")]}  # bits per byte up = forgetting up
    points = shift_forgetting_points({"A": [run]}, "during/shift_kl", "during/hhh_alignment/gold_logprob")
    assert points == {"A": [(0.1, 0.5, "A#0"), (0.3, 1.0, "A#0")]}  # a log-probability down = forgetting up
