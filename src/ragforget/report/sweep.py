"""A report for any sweep, with no config to write (``report=sweep``).

The columns are what the sweep varied: the overrides (the ``sweep_overrides`` tag every job of a
``--multirun`` carries) whose values differ between the runs, less the seed. ``--multirun
method=sft,selfaug seed=0,1,2`` gives the columns ``method=selfaug`` and ``method=sft``, three seeds each.
The rows are ODQA, retrieval, every retention task the runs measured, the retention average and the
distribution shift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ragforget.errors import ConfigError
from ragforget.report.query import RunRecord
from ragforget.report.spec import ReportSpec, report_spec

COLUMN_TAG = "report_column"   # a tag the report adds to each run it reads (never written to MLflow)
SEED_KEYS = ("seed", "+seed")
FIXED_ROWS = [{"metric": "odqa/acc", "label": "ODQA acc"}, {"metric": "odqa/f1", "label": "ODQA F1"},
              {"metric": "retrieval/recall_at_3", "label": "recall@3"}]
SUMMARY_ROWS = [{"metric": "retention/macro_avg", "label": "Retention average"},
                {"metric": "shift/kl", "label": "Distribution shift (KL)", "scale": 1.0, "decimals": 3,
                 "lower_is_better": True}]


def override_items(overrides: str) -> list[str]:
    """Split Hydra's ``override_dirname`` ("a=1,b=[x,y]") at the commas between overrides, not inside lists."""
    items, depth, current = [], 0, ""
    for char in overrides:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [item for item in [*items, current] if item and item != "(none)"]


def overrides_of(run: RunRecord) -> dict[str, str]:
    """What this run's job was given on the command line (a single run: its method, model and retriever)."""
    if "sweep_overrides" in run.tags:
        return dict(item.split("=", 1) for item in override_items(run.tags["sweep_overrides"]) if "=" in item)
    return {key: run.tags.get(key, "?") for key in ("method", "model", "retriever")}


def column_labels(runs: list[RunRecord]) -> dict[str, str]:
    """Run id -> its column: the overrides whose values differ between the runs, less the seed."""
    given = {run.run_id: overrides_of(run) for run in runs}
    keys = sorted({key for overrides in given.values() for key in overrides} - set(SEED_KEYS))
    varying = [key for key in keys if len({overrides.get(key) for overrides in given.values()}) > 1]
    return {run_id: ", ".join(f"{key}={overrides.get(key, '(default)')}" for key in varying) or "(all runs)"
            for run_id, overrides in given.items()}


def retention_tasks(runs: list[RunRecord]) -> list[str]:
    """``retention/<task>`` primary scores the runs report (not their sub-measures, deltas or averages)."""
    names = {key for run in runs for key in run.metrics
             if key.startswith("retention/") and key.count("/") == 1 and "macro_avg" not in key}
    return sorted(names)


def sweep_report(raw: Mapping[str, Any], runs: list[RunRecord]) -> tuple[ReportSpec, list[RunRecord]]:
    """The spec of ``raw`` (conf/report/sweep.yaml) completed from the runs, and the runs labelled by column."""
    if not runs:
        where = f"sweep_id {raw.get('sweep_id')}" if raw.get("sweep_id") else f"experiment {raw.get('experiment')}"
        raise ConfigError("report.sweep_id", f"no runs found for {where}",
                          "take the id from a run's sweep_id tag (printed when a --multirun ends), or set "
                          "report.experiment=<the sweep's logger.experiment_name>")
    columns = column_labels(runs)
    labelled = [replace(run, tags={**run.tags, COLUMN_TAG: columns[run.run_id]}) for run in runs]
    labels = sorted({run.tags[COLUMN_TAG] for run in labelled})
    seeds = sorted({run.seed for run in labelled}, key=lambda seed: (len(seed), seed))
    rows = [*FIXED_ROWS,
            *({"metric": name, "label": name.removeprefix("retention/")} for name in retention_tasks(runs)),
            *SUMMARY_ROWS]
    name = f"{raw['name']}-{raw['sweep_id']}" if raw.get("sweep_id") else raw["name"]
    spec = report_spec({**raw, "name": name, "seeds": seeds, "rows": rows,
                        "columns": [{"label": label, "tags": {COLUMN_TAG: label}} for label in labels]})
    return spec, labelled
