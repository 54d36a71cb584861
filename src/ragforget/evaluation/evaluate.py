"""The evaluate stage: ODQA accuracy, retention (lm-eval) and distribution shift for one model.

Metric names (MLflow): odqa/{em,f1,acc}, retention/<task> (the task's primary score, higher is
better), retention/<task>/<metric> (every other measure), retention/macro_avg, shift/kl.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ragforget.assets.prepare import PreparedAssets
from ragforget.data.rag_examples import RagExample
from ragforget.evaluation.odqa import evaluate_odqa
from ragforget.evaluation.shift import distribution_shift
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


def retention_metrics(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, assets: PreparedAssets,
                      out_dir: Path | None) -> dict[str, float]:
    """Run the retention suite and name its numbers retention/<task>[/<measure>]."""
    result = assets.retention.evaluate(model, tokenizer, out_dir)
    metrics = {f"retention/{name}": value for name, value in result.metrics.items()}
    metrics.update({f"retention/{task}": score for task, score in result.primary.items()})
    metrics.update({f"retention/{task}/chance": level for task, level in result.chance.items()})
    if result.primary:
        metrics["retention/macro_avg"] = statistics.fmean(result.primary.values())
    return metrics


def evaluate_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: DictConfig,
                   examples: Sequence[RagExample], assets: PreparedAssets, out_dir: Path | None
                   ) -> dict[str, float]:
    """ODQA and retention metrics of one model (the base or a fine-tuned one)."""
    start = time.perf_counter()
    ecfg = cfg.eval
    odqa = evaluate_odqa(model, tokenizer, examples, cfg.model.chat_template, ecfg.odqa.batch_size,
                         ecfg.odqa.max_new_tokens,
                         predictions_path=out_dir / "predictions.jsonl" if out_dir else None)
    metrics: dict[str, float] = {f"odqa/{name}": value for name, value in odqa.items()}
    log.info("ODQA on %d questions: %s", len(examples), {k: round(v, 4) for k, v in odqa.items()})
    if ecfg.retention.tasks:
        metrics.update(retention_metrics(model, tokenizer, assets, out_dir))
    metrics["time/eval_s"] = time.perf_counter() - start
    return metrics


def shift_metric(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: DictConfig,
                 assets: PreparedAssets, base_model: PreTrainedModel | None = None) -> dict[str, float]:
    """shift/kl: mean token KL(base || tuned) on general prompts (IFEval-style and held-out summaries)."""
    kl = distribution_shift(model, tokenizer, assets.shift_prompts, base_model=base_model,
                            max_tokens=cfg.eval.shift.max_tokens, batch_size=cfg.eval.shift.batch_size)
    return {"shift/kl": kl}


def with_deltas(metrics: dict[str, float], base: dict[str, float]) -> dict[str, Any]:
    """Add base/<name> for every metric and the retention deltas against the base model."""
    out: dict[str, Any] = dict(metrics)
    for name, value in base.items():
        if not name.startswith("time/"):
            out[f"base/{name}"] = value
    if "retention/macro_avg" in metrics and "retention/macro_avg" in base:
        out["retention/delta_macro_avg"] = metrics["retention/macro_avg"] - base["retention/macro_avg"]
        if base["retention/macro_avg"]:
            out["retention/ratio_macro_avg"] = metrics["retention/macro_avg"] / base["retention/macro_avg"]
    return out
