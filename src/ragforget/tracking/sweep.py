"""What a Hydra sweep adds to each of its runs: shared tags (to group them in MLflow) and an objective.

Every job of one ``--multirun`` (grid, joblib, submitit or Optuna) carries the same ``sweep_id``, so the
MLflow dashboard can filter one sweep (``tags.sweep_id = '...'``) and compare its runs side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ragforget.errors import ConfigError, RagforgetError
from ragforget.utils.hashing import stable_hash


def in_sweep(hydra_cfg: Any) -> bool:
    """Whether this job is one of a ``--multirun`` (a sweeper reads its return value); ``HydraConfig.get()``.

    Only then does a job have an objective: a single run has no sweeper to read one, so it must not fail at
    its very end because an objective metric is missing (``eval.retention.tasks=[]``: no retention/macro_avg).
    """
    from hydra.types import RunMode

    return bool(hydra_cfg.mode == RunMode.MULTIRUN)


def sweep_id(sweep_dir: str | Path) -> str:
    """The sweep folder is unique per sweep (a timestamp by default); its hash is a short, filterable id."""
    return stable_hash(str(Path(sweep_dir).resolve()))[:12]


def sweep_tags(hydra_cfg: Any) -> dict[str, str]:
    """Tags for a job of a multirun (empty for a single run). ``hydra_cfg`` is ``HydraConfig.get()``."""
    if not in_sweep(hydra_cfg):
        return {}
    sweep_dir = str(Path(hydra_cfg.sweep.dir).resolve())
    return {
        "sweep_id": sweep_id(sweep_dir),
        "sweep_dir": sweep_dir,
        "sweep_job": str(hydra_cfg.job.num),
        "sweep_overrides": hydra_cfg.job.override_dirname or "(none)",
    }


EVALUATING_STAGES = ("all", "evaluate")


class ObjectiveError(RagforgetError):
    """The sweep objective is NaN or infinite: this trial has no value a sweeper could rank, so it fails.

    Raised, not returned, because of how hydra-optuna-sweeper 1.3.0 reads a job: ``float(ret.return_value)``,
    where a failed job re-raises its error, and any error there makes the trial FAIL in Optuna; the sweep
    goes on while the failed share of a batch stays within ``max_failure_rate``. Returning NaN instead
    crashes the whole sweep (Optuna refuses to tell a NaN value, then refuses a FAIL carrying it), and
    returning None fails the trial only as "Return value must be float-castable. Got 'None'." while the
    job's MLflow run stays FINISHED. Raised inside the job's tracked scope, it marks that run FAILED too.
    """


def objective_value(metrics: Mapping[str, float], objective: Mapping[str, Any], stage: str) -> float | None:
    """The weighted sum of metrics a sweeper maximizes (``objective.metrics`` x ``objective.weights``).

    None for a stage that evaluates nothing (prepare, synthesize, report) and for a DDP worker (its
    job's metrics are rank 0's); a named metric that an evaluated job lacks is a config mistake, and a
    NaN or infinite sum is an ``ObjectiveError`` naming the terms that made it so.
    """
    if stage not in EVALUATING_STAGES or not metrics:
        return None
    names, weights = list(objective["metrics"]), list(objective["weights"])
    if len(names) != len(weights):
        raise ConfigError("objective.weights", f"{len(weights)} weights for {len(names)} metrics {names}",
                          "give one weight per metric")
    missing = [name for name in names if name not in metrics]
    if missing:
        raise ConfigError("objective.metrics", f"{missing} were not produced by this job",
                          f"choose among {sorted(k for k in metrics if not k.startswith('base/'))[:20]}")
    terms = [(name, float(weight), float(metrics[name])) for name, weight in zip(names, weights)]
    value = sum(weight * metric for _, weight, metric in terms)
    if not math.isfinite(value):
        formula = " + ".join(f"{weight:g} x {name} ({metric:g})" for name, weight, metric in terms)
        culprits = [name for name, weight, metric in terms if not math.isfinite(weight * metric)] or names
        raise ObjectiveError(f"the sweep objective is {value} (not finite) = {formula}; "
                             f"from metrics {culprits}, so this trial fails")
    return value
