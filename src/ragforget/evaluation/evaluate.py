"""The evaluate stage: ODQA accuracy, retention (lm-eval) and distribution shift for one model.

Metric names (MLflow): odqa/{em,f1,acc}, retention/<task> (the task's primary score, higher is
better), retention/<task>/<metric> (every other measure), retention/macro_avg, shift/kl.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ragforget.data.rag_examples import RagExample
from ragforget.evaluation.metrics import METRICS as ODQA_METRICS
from ragforget.evaluation.odqa import evaluate_odqa
from ragforget.evaluation.retention.runner import RetentionResult
from ragforget.evaluation.retention.suites import RetentionSuite
from ragforget.evaluation.shift import distribution_shift
from ragforget.evaluation.statistics import ItemScores, paired_bootstrap, paired_macro_bootstrap, write_item_scores
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


class EvaluationAssets(Protocol):
    """What evaluation reads from the prepared assets (``prepare.PreparedAssets`` has all of it)."""

    @property
    def cache_dir(self) -> Path:
        """The cache every asset lives in."""
        ...

    @property
    def model_path(self) -> str:
        """The materialized starting model."""
        ...

    @property
    def retention(self) -> RetentionSuite:
        """The prepared retention suite (``eval.retention``)."""
        ...

    @property
    def shift_prompts(self) -> Sequence[str]:
        """General prompts for the distribution-shift measure."""
        ...


def retention_metrics(result: RetentionResult) -> dict[str, float]:
    """The retention suite's numbers named retention/<task>[/<measure>]."""
    metrics = {f"retention/{name}": value for name, value in result.metrics.items()}
    metrics.update({f"retention/{task}": score for task, score in result.primary.items()})
    metrics.update({f"retention/{task}/chance": level for task, level in result.chance.items()})
    if result.primary:
        metrics["retention/macro_avg"] = statistics.fmean(result.primary.values())
    return metrics


def evaluate_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: DictConfig,
                   examples: Sequence[RagExample], assets: EvaluationAssets, out_dir: Path
                   ) -> tuple[dict[str, float], dict[str, ItemScores]]:
    """ODQA and retention metrics of one model (the base or a fine-tuned one), and its scores item by item
    (``odqa/<measure>``, ``retention/<task>``; also written to ``out_dir``: :func:`write_item_scores`)."""
    start = time.perf_counter()
    ecfg = cfg.eval
    rows = evaluate_odqa(model, tokenizer, examples, cfg.model.chat_template, ecfg.odqa.batch_size,
                         ecfg.odqa.max_new_tokens, predictions_path=out_dir / "predictions.jsonl")
    items = {f"odqa/{name}": ItemScores(tuple(row["id"] for row in rows), tuple(float(row[name]) for row in rows),
                                        (1.0,) * len(rows)) for name in ODQA_METRICS}
    metrics: dict[str, float] = {name: scores.score() for name, scores in items.items()}
    log.info("ODQA on %d questions: %s", len(examples), {k: round(v, 4) for k, v in metrics.items()})
    if ecfg.retention.tasks:
        result = assets.retention.evaluate(model, tokenizer, out_dir)
        metrics.update(retention_metrics(result))
        items.update({f"retention/{task}": scores for task, scores in result.items.items()})
    metrics["time/eval_s"] = time.perf_counter() - start
    write_item_scores(out_dir, items)
    return metrics, items


def paired_deltas(base: Mapping[str, ItemScores], tuned: Mapping[str, ItemScores], retention_tasks: Sequence[str],
                  resamples: int, seed: int, level: float) -> dict[str, float]:
    """``<measure>/delta``, ``/delta_lo``, ``/delta_hi`` (the ``level`` paired bootstrap interval) and
    ``/mde`` (the change detectable with 80% power) of every measure both models have item by item, and of
    ``retention/macro_avg`` when every task has them."""
    deltas = {name: paired_bootstrap(base[name], tuned[name], resamples, seed, level)
              for name in sorted(base.keys() & tuned.keys())}
    tasks = [f"retention/{task}" for task in retention_tasks]
    if tasks and all(task in deltas for task in tasks):
        deltas["retention/macro_avg"] = paired_macro_bootstrap({t: base[t] for t in tasks}, {t: tuned[t] for t in tasks},
                                                               resamples, seed, level)
    return {f"{name}/{part}": value for name, d in deltas.items()
            for part, value in (("delta", d.delta), ("delta_lo", d.lo), ("delta_hi", d.hi), ("mde", d.mde))}


def shift_metric(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: DictConfig,
                 assets: EvaluationAssets, base_model: PreTrainedModel | None = None) -> dict[str, float]:
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
