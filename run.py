"""Hydra entry point: compose the config, then hand it to the pipeline.

    python run.py                                  # the default experiment (sft on SmolLM2, offline)
    python run.py method=selfaug retriever=dense   # swap any config group
    python run.py --multirun method=sft,selfaug seed=1,2
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
    from ragforget.pipeline import run_job
    from ragforget.report.summary import summary_table

    metrics = run_job(cfg, Path(HydraConfig.get().runtime.output_dir))
    if metrics:
        print(summary_table(metrics, cfg.run_name))  # the user-facing result of the job
    return metrics.get("odqa/acc")


if __name__ == "__main__":
    main()
