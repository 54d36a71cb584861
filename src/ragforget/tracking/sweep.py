"""What a Hydra sweep adds to each of its runs: shared tags (to group them in MLflow) and an objective.

Every job of one ``--multirun`` (grid, joblib, submitit or Optuna) carries the same ``sweep_id``, so the
MLflow dashboard can filter one sweep (``tags.sweep_id = '...'``) and compare its runs side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ragforget.errors import ConfigError
from ragforget.utils.hashing import stable_hash


def sweep_tags(hydra_cfg: Any) -> dict[str, str]:
    """Tags for a job of a multirun (empty for a single run). ``hydra_cfg`` is ``HydraConfig.get()``."""
    from hydra.types import RunMode

    if hydra_cfg.mode != RunMode.MULTIRUN:
        return {}
    sweep_dir = str(Path(hydra_cfg.sweep.dir).resolve())
    return {
        # The sweep folder is unique per sweep (a timestamp by default); its hash is a short, filterable id.
        "sweep_id": stable_hash(sweep_dir)[:12],
        "sweep_dir": sweep_dir,
        "sweep_job": str(hydra_cfg.job.num),
        "sweep_overrides": hydra_cfg.job.override_dirname or "(none)",
    }


EVALUATING_STAGES = ("all", "evaluate")


def objective_value(metrics: Mapping[str, float], objective: Mapping[str, Any], stage: str) -> float | None:
    """The weighted sum of metrics a sweeper maximizes (``objective.metrics`` x ``objective.weights``).

    None for a stage that evaluates nothing (prepare, synthesize, report) and for a DDP worker (its
    job's metrics are rank 0's); a named metric that an evaluated job lacks is a config mistake.
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
    value = sum(float(weight) * float(metrics[name]) for name, weight in zip(names, weights))
    return value if math.isfinite(value) else None
