"""Retention suites as swappable objects (``eval.retention._target_``), each a :class:`RetentionSuite`.

- :class:`OfflineSuite`: lm-eval tasks generated at prepare time from PyPI-packaged data (default).
- :class:`StandardSuite`: lm-eval's own task names (mmlu, arc_challenge, ...), for users with the Hub.
Both return a :class:`RetentionResult` with one higher-is-better primary score per task.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ragforget.errors import ConfigError
from ragforget.evaluation.retention.runner import RetentionResult, evaluate_retention, item_scores, json_safe
from ragforget.evaluation.retention.task_folders import prepare_retention_suite
from ragforget.utils.hashing import tree_fingerprint
from ragforget.utils.io import write_json
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


class RetentionSuite(Protocol):
    """What ``eval.retention`` builds: prepared once per run, then evaluated on each model."""

    def prepare(self, cache_dir: Path, heldout_summaries: Path | None) -> None:
        """Build whatever the tasks read into ``cache_dir`` (the held-out summaries feed perplexity)."""
        ...

    def content_key(self) -> str | None:
        """A hash of what the prepared suite evaluates on: part of the base evaluation's cache key."""
        ...

    def evaluate(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 out_dir: Path | None) -> RetentionResult:
        """Every task's scores for ``model`` (and its raw results written to ``out_dir``)."""
        ...


# lm-eval scores a log-likelihood batch as [batch, tokens, vocab] logits plus their fp32 log-softmax,
# both alive at once (6 bytes per entry for a bf16 model). On the CPU fewer rows are also faster
# (less padding): SmolLM2 on hhh_alignment + wiki_ppl took 83 s and 10.1 GB peak RSS at 15 rows,
# 60 s / 5.4 GB at 7, 51 s / 2.9 GB at 3, 45 s / 2.2 GB at 2 (the budget below gives 2).
# On a GPU the budget is a share of the memory free once the model is loaded.
CPU_LOGIT_BUDGET_BYTES = 768 * 2**20
GPU_FREE_MEMORY_SHARE = 0.5
ASSUMED_TOKENS_PER_ROW = 1024


def logit_budget(device: torch.device) -> int:
    """Bytes lm-eval's logits may take on ``device``."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * GPU_FREE_MEMORY_SHARE)
    return CPU_LOGIT_BUDGET_BYTES


def fit_batch_to_memory(model: Any, requested: int | str) -> int:
    """lm-eval's batch size: ``requested`` rows, or with ``auto`` as many as the device's budget allows.

    An explicit size is still capped by the budget, so no setting can exhaust the machine.
    """
    vocab = int(model.get_output_embeddings().weight.shape[0])
    parameter = next(model.parameters())
    per_row = vocab * ASSUMED_TOKENS_PER_ROW * (parameter.element_size() + 4)
    fitted = max(1, logit_budget(parameter.device) // per_row)
    if requested != "auto":
        if fitted < int(requested):
            log.info("retention batch size %s -> %d for a %d-token vocabulary (memory budget)", requested, fitted,
                     vocab)
        fitted = min(fitted, int(requested))
    return fitted


class OfflineSuite:
    """The packaged suite: BIG-bench MC, cloze/GSM8K generation, IFEval-style, held-out perplexity."""

    def __init__(self, tasks: Sequence[str], limit: int | None, seed: int, batch_size: int = 16,
                 scoring_batch_size: int | str = "auto", apply_chat_template: bool | Literal["auto"] = "auto",
                 max_gen_toks: int | None = None) -> None:
        self.tasks, self.limit, self.seed = list(tasks), limit, seed
        self.batch_size, self.scoring_batch_size = batch_size, scoring_batch_size
        self.apply_chat_template, self.max_gen_toks = apply_chat_template, max_gen_toks
        self.task_dir: Path | None = None

    def prepare(self, cache_dir: Path, heldout_summaries: Path | None) -> None:
        if self.tasks:
            self.task_dir = prepare_retention_suite(self.tasks, self.limit, self.seed, cache_dir, heldout_summaries)

    def content_key(self) -> str | None:
        """A hash of the prepared suite's files (items, prompts, task configs): part of cache keys."""
        return tree_fingerprint(self.task_dir) if self.task_dir is not None else None

    def evaluate(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 out_dir: Path | None) -> RetentionResult:
        if self.task_dir is None:
            raise RuntimeError("OfflineSuite.prepare() must run before evaluate()")
        return evaluate_retention(model, tokenizer, self.task_dir, self.tasks, batch_size=self.batch_size,
                                  scoring_batch_size=fit_batch_to_memory(model, self.scoring_batch_size),
                                  apply_chat_template=self.apply_chat_template, out_dir=out_dir,
                                  max_gen_toks=self.max_gen_toks)


class StandardSuite:
    """lm-eval's registered tasks by name; ``primary_metrics`` names each task's headline metric.

    ``include_path`` adds task YAMLs (e.g. the same tasks pointed at local files of the Hub's shape).
    """

    def __init__(self, tasks: Sequence[str], primary_metrics: Mapping[str, str], limit: int | None = None,
                 batch_size: int = 16, apply_chat_template: bool = False, num_fewshot: int | None = None,
                 include_path: str | None = None) -> None:
        missing = [t for t in tasks if t not in primary_metrics]
        if missing:
            raise ConfigError("eval.retention.primary_metrics", f"no primary metric for {missing}",
                              "map every task to the metric that goes into the macro average")
        self.tasks, self.primary_metrics, self.limit = list(tasks), dict(primary_metrics), limit
        self.batch_size, self.apply_chat_template, self.num_fewshot = batch_size, apply_chat_template, num_fewshot
        self.include_path = include_path

    def prepare(self, cache_dir: Path, heldout_summaries: Path | None) -> None:
        """Nothing to build: lm-eval fetches its datasets from the Hub when the tasks load."""

    def content_key(self) -> str | None:
        """The task YAMLs under ``include_path`` (lm-eval's own tasks are fixed by its version)."""
        return tree_fingerprint(self.include_path) if self.include_path else None

    def evaluate(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 out_dir: Path | None) -> RetentionResult:
        from lm_eval.evaluator import evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager, get_task_dict

        manager = TaskManager(include_path=self.include_path)
        task_dict = get_task_dict(self.tasks, manager)
        if self.num_fewshot is not None:
            for task in task_dict.values():
                task.set_config(key="num_fewshot", value=self.num_fewshot)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=fit_batch_to_memory(model, self.batch_size),
                  softmax_dtype="float32")
        start = time.perf_counter()
        results = evaluate(lm=lm, task_dict=task_dict, limit=self.limit, apply_chat_template=self.apply_chat_template,
                           log_samples=True)
        assert results is not None
        metrics: dict[str, float] = {}
        for task, values in results["results"].items():
            for key, value in values.items():
                metric, _, filt = key.partition(",")
                if isinstance(value, (int, float)) and not metric.endswith("_stderr") and metric != "alias":
                    metrics[f"{task}/{metric}" if filt in ("", "none") else f"{task}/{metric}/{filt}"] = float(value)
        primary = {}
        for task in self.tasks:
            name = f"{task}/{self.primary_metrics[task]}"
            if name not in metrics:
                raise ConfigError(f"eval.retention.primary_metrics.{task}",
                                  f"lm-eval reported no '{self.primary_metrics[task]}'",
                                  f"it reported {sorted(k for k in metrics if k.startswith(task + '/'))}")
            primary[task] = metrics[name]
        raw = {"results": results["results"], "configs": results.get("configs", {}),
               "versions": results.get("versions", {}), "lm_eval_version": version("lm_eval"),
               "seconds": time.perf_counter() - start, "limit": self.limit}
        items = {task: item_scores(results["samples"][task], self.primary_metrics[task]) for task in self.tasks}
        result = RetentionResult(metrics=metrics, primary=primary, chance={}, raw=json_safe(raw),
                                 items={task: scores for task, scores in items.items() if scores is not None})
        if out_dir is not None:
            write_json(Path(out_dir) / "retention_results.json",
                       {"metrics": metrics, "primary": primary, "raw": result.raw})
        return result
