"""Forgetting curves: how far the model drifts from its base while it trains, not only where it ends.

Every ``every_n_steps`` optimizer steps, and at step 0, a Lightning callback measures on a fixed subset
what needs no generation: the distribution shift on the general prompts (``during/shift_kl``) and the
retention suite's continuous scoring measures (``during/<task>/<measure>``: the gold answer's
log-probability of the multiple-choice tasks, bits per byte of the held-out text). They are MLflow step
metrics beside ``train/*``. The measurement runs in eval mode, draws no random numbers and restores the
train mode, so a run trains exactly as it would without it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
from torch import nn

from ragforget.evaluation.retention.runner import evaluate_retention
from ragforget.evaluation.retention.task_folders import TASKS
from ragforget.evaluation.shift import distribution_shift
from ragforget.models.loading import has_adapters
from ragforget.tracking.mlflow_run import TrackedRun
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

SCORING_KINDS = ("mc", "perplexity")  # tasks scored by log-likelihood alone: no generation
CONTINUOUS = ("gold_logprob", "bits_per_byte")  # the measures that move before an answer flips


def scoring_tasks(tasks: Sequence[str]) -> list[str]:
    """The tasks of a suite that need no generation."""
    return [task for task in tasks if TASKS[task].kind in SCORING_KINDS]


def forgetting_measures(model: Any, tokenizer: Any, shift_prompts: Sequence[str], task_dir: Path | None,
                        tasks: Sequence[str], limit: int, shift_max_tokens: int, batch_size: int) -> dict[str, float]:
    """``shift_kl`` (adapters on vs off; only for adapter models) and ``<task>/<measure>`` on the subset."""
    measures: dict[str, float] = {}
    if has_adapters(model):
        measures["shift_kl"] = distribution_shift(model, tokenizer, shift_prompts, max_tokens=shift_max_tokens,
                                                  batch_size=batch_size)
    if task_dir is not None and tasks:
        result = evaluate_retention(model, tokenizer, task_dir, list(tasks), batch_size=batch_size, limit=limit,
                                    bootstrap_iters=0)
        measures.update({f"{task}/{measure}": result.metrics[f"{task}/{measure}"]
                         for task in tasks for measure in CONTINUOUS if f"{task}/{measure}" in result.metrics})
    return measures


class ForgettingCurves(L.Callback):
    """Logs :func:`forgetting_measures` as ``during/*`` at step 0 and every ``every_n_steps`` steps."""

    def __init__(self, run: TrackedRun, tokenizer: Any, every_n_steps: int, shift_prompts: Sequence[str],
                 task_dir: Path | None, tasks: Sequence[str], limit: int, shift_max_tokens: int,
                 batch_size: int) -> None:
        self.run, self.tokenizer, self.every_n_steps = run, tokenizer, every_n_steps
        self.shift_prompts, self.task_dir, self.tasks = list(shift_prompts), task_dir, scoring_tasks(tasks)
        self.limit, self.shift_max_tokens, self.batch_size = limit, shift_max_tokens, batch_size
        self._last_step = -1
        self.seconds = 0.0  # what the curves cost, for time/during_s

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:  # one rank's forward passes on a sharded model would wait forever
            log.warning("forgetting curves are measured in single-process training only; none for this run")
            self.every_n_steps = 0
            return
        if trainer.global_step:  # resumed: the steps the interrupted run logged stay as they are
            keys = (["shift_kl"] if has_adapters(cast(nn.Module, pl_module.model)) else []) + [
                f"{task}/{measure}" for task in self.tasks for measure in CONTINUOUS]
            self._last_step = max((self.run.last_step(f"during/{key}") for key in keys), default=-1)
        if trainer.global_step % self.every_n_steps == 0:  # step 0, or a resumed run's measuring step
            self._measure(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._measure(trainer, pl_module)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step <= self._last_step:  # gradient accumulation, or a step a resumed run already logged
            return
        self._last_step = step
        start = time.perf_counter()
        model = cast(nn.Module, pl_module.model)
        training = model.training
        try:  # eval-mode forward passes only: no RNG is drawn (a test trains with and without the curves)
            measures = forgetting_measures(model, self.tokenizer, self.shift_prompts, self.task_dir, self.tasks,
                                           self.limit, self.shift_max_tokens, self.batch_size)
        finally:
            model.train(training)
        self.seconds += time.perf_counter() - start
        self.run.log_metrics({f"during/{name}": value for name, value in measures.items()}, step=step)
        log.info("step %d: %s", step, {name: round(value, 4) for name, value in measures.items()})
