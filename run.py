"""Hydra entry point: compose the config, then hand it to the pipeline.

    python run.py                                  # the default experiment (sft on SmolLM2, offline)
    python run.py method=selfaug retriever=dense   # swap any config group
    python run.py --multirun method=sft,selfaug seed=1,2
    python run.py --multirun experiment=selfaug_table1   # a ready sweep; then:
    python run.py stage=report report=selfaug_table1     # its table, plots and CSV from MLflow
"""

from __future__ import annotations

import ragforget.env

ragforget.env.apply_defaults()  # before any Hugging Face import: their offline switches are read at import

from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ragforget.conf_resolvers import register_resolvers  # noqa: E402

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """One job; under a sweeper (--multirun) returns its objective (what hydra-optuna-sweeper maximizes).

    A single run returns None and computes no objective, so a config without the objective's metrics
    (``eval.retention.tasks=[]``) still finishes. In a sweep ``run_job`` computes it inside the job's
    MLflow run, so a NaN or missing one fails the job and its run, which Optuna records as a FAILed trial.
    """
    from ragforget.pipeline import run_job
    from ragforget.report.summary import summary_table
    from ragforget.tracking.sweep import in_sweep, sweep_tags

    hydra_cfg = HydraConfig.get()
    if cfg.resume_dir:
        from ragforget.resume import resumed_config

        cfg = resumed_config(cfg, list(hydra_cfg.overrides.task))
    metrics = run_job(cfg, Path(hydra_cfg.runtime.output_dir), tags=sweep_tags(hydra_cfg),
                      sweeping=in_sweep(hydra_cfg))
    if metrics:
        print(summary_table(metrics, cfg.run_name))  # the user-facing result of the job
    return metrics.get("objective")


if __name__ == "__main__":
    main()
