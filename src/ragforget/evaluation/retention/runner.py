"""Run the retention suite on an in-memory model with lm-eval and flatten its results.

We call ``lm_eval.evaluator.evaluate`` (what ``simple_evaluate`` wraps) rather than
``simple_evaluate``: the latter ends with an environment report (pip list, git describe, torch's
collect_env) that costs seconds per call and says nothing we do not record ourselves.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragforget.evaluation.retention.task_folders import COMPANION_SUFFIX, TASKS, load_manifest, validate_tasks
from ragforget.evaluation.statistics import ItemScores
from ragforget.utils.io import write_json, write_jsonl
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


@dataclass
class RetentionResult:
    """Flat metrics ("task/metric"), one primary score per task (higher = better), chance levels, raw,
    and each task's primary score item by item (for paired comparisons with another model)."""

    metrics: dict[str, float]
    primary: dict[str, float]
    chance: dict[str, float]
    raw: dict[str, Any] = field(default_factory=dict)
    items: dict[str, ItemScores] = field(default_factory=dict)


def item_scores(samples: list[dict[str, Any]], measure: str) -> ItemScores | None:
    """The per-item parts of ``measure`` from lm-eval's logged samples, or None for a measure without them.

    A number per item is averaged; a list (instruction-level accuracy) counts its true entries over its
    length; ``bits_per_byte``'s [log-likelihood, bytes] becomes the probability per byte, exp(sum ll / sum
    bytes) = 2 ** -bits_per_byte, the suite's wiki_ppl score.
    """
    ids = tuple(str(sample["doc_id"]) for sample in samples)
    values: list[Any] = [sample.get(measure) for sample in samples]
    if measure == "bits_per_byte":
        return ItemScores(ids, tuple(float(v[0]) for v in values), tuple(float(v[1]) for v in values), "exp")
    if all(isinstance(v, list) for v in values):
        return ItemScores(ids, tuple(float(sum(v)) for v in values), tuple(float(len(v)) for v in values))
    if all(isinstance(v, (int, float)) for v in values):
        return ItemScores(ids, tuple(float(v) for v in values), (1.0,) * len(values))
    return None


GENERATING_KINDS = ("cloze", "gsm8k", "ifeval")


def _request_groups(tasks: list[str], apply_chat_template: bool | Literal["auto"]
                    ) -> dict[tuple[bool, bool], list[str]]:
    """Tasks (with their companions) grouped by (chat template?, generates?).

    Generating and scoring tasks run apart because their batches cost different memory: a scoring
    batch holds [rows, tokens, vocab] logits, a generating one a small KV cache.
    """
    groups: dict[tuple[bool, bool], list[str]] = {}
    for name in tasks:
        spec = TASKS[name]
        chat = spec.chat_template if apply_chat_template == "auto" else bool(apply_chat_template)
        groups.setdefault((chat, spec.kind in GENERATING_KINDS), []).append(name)
        if spec.kind in ("cloze", "gsm8k"):  # the companion scores the gold answer
            groups.setdefault((chat, False), []).append(name + COMPANION_SUFFIX)
    return groups


def json_safe(obj: Any) -> Any:
    """Recursively turn lm-eval's results into JSON-serializable values."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _flatten(task: str, task_results: dict[str, Any]) -> dict[str, float]:
    """lm-eval's {"acc,none": x, "acc_stderr,none": s} -> {"task/acc": x, "task/acc_stderr": s}."""
    flat = {}
    for key, value in task_results.items():
        metric, _, _filter = key.partition(",")
        # sample_len is bookkeeping (items scored), not a measurement.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and metric != "sample_len":
            flat[f"{task}/{metric}"] = float(value)
    return flat


def sample_measures(kind: str, samples: list[dict[str, Any]]) -> dict[str, float]:
    """Continuous measures from logged samples: gold log-probability (MC) or gold NLL (companions)."""
    if kind == "mc":
        logprobs, probs = [], []
        for sample in samples:
            lls = np.array([float(r[0]) for r in sample["filtered_resps"]])
            gold = sample["doc"]["gold"]
            gold = gold if isinstance(gold, list) else [gold]
            logprobs.append(float(lls[gold].max()))
            shifted = np.exp(lls - lls.max())
            probs.append(float(shifted[gold].sum() / shifted.sum()))
        return {"gold_logprob": float(np.mean(logprobs)), "gold_choice_prob": float(np.mean(probs))}
    if kind == "companion":
        nll = [-float(sample["filtered_resps"][0][0]) for sample in samples]
        return {"gold_nll": float(np.mean(nll))}
    return {}


def _primary(name: str, metrics: dict[str, float]) -> float:
    spec = TASKS[name]
    if spec.kind == "perplexity":
        # Geometric-mean probability per byte: bounded, higher is better, ratio-friendly.
        return 2.0 ** -metrics[f"{name}/bits_per_byte"]
    return metrics[f"{name}/{spec.primary}"]


def evaluate_retention(
    model: Any,
    tokenizer: Any,
    task_dir: Path,
    tasks: list[str],
    batch_size: int = 8,
    scoring_batch_size: int | None = None,
    apply_chat_template: bool | Literal["auto"] = "auto",
    out_dir: Path | None = None,
    max_gen_toks: int | None = None,
    limit: int | None = None,
    system_instruction: str | None = None,
    bootstrap_iters: int = 1000,
) -> RetentionResult:
    """Evaluate ``model`` on ``tasks`` of a prepared suite; write results and samples to ``out_dir``.

    ``apply_chat_template="auto"`` uses each task's default (generation tasks with the chat template,
    log-likelihood tasks without); a bool forces it for all. ``max_gen_toks`` overrides the
    generation budget of generation tasks; ``limit`` caps items per task (for tests). Generation
    requests run ``batch_size`` at a time, log-likelihood requests ``scoring_batch_size`` (default: the same).
    """
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    validate_tasks(tasks)
    manifest = load_manifest(task_dir)
    missing = [t for t in tasks if t not in manifest["tasks"]]
    if missing:
        raise ValueError(f"{task_dir} was prepared without {missing}; prepare a suite that includes them")
    # Log-softmax in fp32 even for bf16 models: bf16 log-probs are too coarse for gold_logprob.
    models = {generates: HFLM(pretrained=model, tokenizer=tokenizer, softmax_dtype="float32",
                              batch_size=batch_size if generates else scoring_batch_size or batch_size)
              for generates in (False, True)}
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    metrics: dict[str, float] = {}
    raw: dict[str, Any] = {"results": {}, "configs": {}, "versions": {}, "n-samples": {}, "seconds": {},
                           "chat_template": {}}
    samples_out: dict[str, list[dict[str, Any]]] = {}
    # "auto" means the chat template for generation tasks, if the model has one (base models such
    # as Gemma 3 270M do not, and get raw prompts everywhere).
    if apply_chat_template == "auto" and not getattr(tokenizer, "chat_template", None):
        apply_chat_template = False
    for (chat, generates), names in _request_groups(tasks, apply_chat_template).items():
        loaded = manager.load(names)
        for task_obj in loaded["tasks"].values():
            task_obj.set_fewshot_seed(seed=manifest["seed"])
            if max_gen_toks is not None and task_obj.get_config("output_type") == "generate_until" \
                    and task_obj.get_config("task") != "qa_wikidata":
                task_obj.set_config(key="generation_kwargs", value={"max_gen_toks": max_gen_toks}, update=True)
        start = time.perf_counter()
        results = evaluate(lm=models[generates], task_dict=loaded, limit=limit, bootstrap_iters=bootstrap_iters,
                           log_samples=True, apply_chat_template=chat, fewshot_as_multiturn=False,
                           system_instruction=system_instruction)
        elapsed = time.perf_counter() - start
        assert results is not None  # single process: rank 0 always gets results
        for task_name in names:
            parent = task_name.removesuffix(COMPANION_SUFFIX)
            kind = "companion" if task_name.endswith(COMPANION_SUFFIX) else TASKS[parent].kind
            task_results = results["results"][task_name]
            if kind != "companion":
                metrics.update(_flatten(task_name, task_results))
            metrics.update({f"{parent}/{k}": v for k, v in sample_measures(kind, results["samples"][task_name]).items()})
            raw["chat_template"][task_name] = chat
            samples_out[task_name] = results["samples"][task_name]
        for key in ("results", "configs", "versions", "n-samples"):
            raw[key].update(results.get(key, {}))
        raw["seconds"][f"chat={chat},generates={generates}"] = elapsed
        log.info("retention tasks %s (chat template %s): %.1f s", names, chat, elapsed)
    raw["lm_eval_version"] = version("lm_eval")
    raw["transformers_version"] = version("transformers")
    raw["batch_size"] = batch_size
    raw["scoring_batch_size"] = scoring_batch_size or batch_size
    raw["limit"] = limit
    raw["suite"] = {"dir": str(task_dir), **manifest}
    primary = {name: _primary(name, metrics) for name in tasks}
    chance = {name: float(manifest["tasks"][name]["chance"]) for name in tasks}
    items = {name: item_scores(samples_out[name], "bits_per_byte" if TASKS[name].kind == "perplexity"
                               else TASKS[name].primary) for name in tasks}
    result = RetentionResult(metrics=metrics, primary=primary, chance=chance, raw=json_safe(raw),
                             items={name: scores for name, scores in items.items() if scores is not None})
    if out_dir is not None:
        write_json(Path(out_dir) / "retention_results.json",
                   {"metrics": metrics, "primary": primary, "chance": chance, "raw": result.raw})
        for task_name, samples in samples_out.items():
            write_jsonl(Path(out_dir) / "samples" / f"{task_name}.jsonl", json_safe(samples))
    return result
