"""Training curves: a Lightning callback that forwards logged train/* (or other prefixed) values to MLflow."""

from __future__ import annotations

from typing import Any

import lightning as L

from ragforget.tracking.mlflow_run import TrackedRun


class MlflowCurves(L.Callback):
    """Every ``every_n_steps`` optimizer steps, log ``<prefix>*`` metrics and the learning rate."""

    def __init__(self, run: TrackedRun, every_n_steps: int = 5, prefix: str = "train/") -> None:
        self.run = run
        self.every_n_steps = every_n_steps
        self.prefix = prefix
        self._last_step = -1  # the last step logged: with gradient accumulation several batches share one

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed from a checkpoint replays the steps after it; those already logged stay as they are.
        if trainer.is_global_zero:
            self._last_step = self.run.last_step(f"{self.prefix}lr")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step <= self._last_step or step % self.every_n_steps or not trainer.is_global_zero:
            return
        self._last_step = step
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(self.prefix)}
        metrics[f"{self.prefix}lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        self.run.log_metrics(metrics, step=step)
