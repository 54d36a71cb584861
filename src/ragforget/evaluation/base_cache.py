"""The starting model's evaluation, computed once per (weights, prompts, eval settings, code) and shared.

Every run that starts from the same model on the same questions compares against the same base numbers:
the first job that needs them evaluates the starting model and publishes the folder whole
(``<cache_dir>/base_eval/<base_eval_key>/``: metrics.json, timing.json, item scores, predictions);
jobs of a sweep that arrive meanwhile wait on the entry's lock and then read it, later runs reuse it.
The key and that layout are how existing caches are found: change them only with what they describe.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ragforget.data.rag_examples import RagExample
from ragforget.evaluation.evaluate import EvaluationAssets, evaluate_model
from ragforget.evaluation.statistics import ItemScores, read_item_scores
from ragforget.models.loading import load_model, load_tokenizer, starting_model_key
from ragforget.utils.device import release_memory
from ragforget.utils.hashing import MODEL_LIBRARIES, code_and_versions, stable_hash, stat_fingerprint
from ragforget.utils.io import atomic_path, cache_lock, read_json, write_json
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

# Eval settings that never change the base model's numbers: the paired deltas are computed after the
# base evaluation, the forgetting curves during training.
BASE_EVAL_INDEPENDENT = ("paired", "during_training")


def base_eval_key(cfg: DictConfig, examples: Sequence[RagExample], assets: EvaluationAssets) -> str:
    """What the starting model's metrics depend on: its weights, every prompt (question and passage
    text) and gold answer, the retention suite's content, the eval settings, our evaluation code and
    the library versions."""
    eval_settings = OmegaConf.to_container(cfg.eval, resolve=True)
    assert isinstance(eval_settings, dict)
    return stable_hash({
        **code_and_versions("ragforget.evaluation", "ragforget.models", "ragforget.data",
                            libraries=(*MODEL_LIBRARIES, "lm_eval")),
        "model": starting_model_key(cfg.model),
        "weights": stat_fingerprint(assets.model_path),
        "eval": {key: value for key, value in eval_settings.items() if key not in BASE_EVAL_INDEPENDENT},
        "prompt": OmegaConf.to_container(cfg.prompt, resolve=True),
        "questions": [(ex.id, ex.messages, ex.golden_answers, ex.doc_ids) for ex in examples],
        "retention": assets.retention.content_key(),
    })


@dataclass(frozen=True)
class BaseEvaluation:
    """The starting model's (cached) evaluation: its metrics, its scores item by item and what it cost."""

    folder: Path                    # the published cache entry (the eval folder of a run of the base model)
    metrics: dict[str, float]
    items: dict[str, ItemScores]    # what a tuned model's paired deltas compare against
    reused: bool                    # read from the cache rather than computed by this job
    seconds: float                  # what computing it took (when it was computed)

    @property
    def cost(self) -> dict[str, float]:
        """``base_eval/reused`` and ``time/base_eval_s``: a sweep's report sums the seconds over the runs
        that reused the evaluation, the time the cache saved."""
        return {"base_eval/reused": float(self.reused), "time/base_eval_s": self.seconds}


def base_evaluation(cfg: DictConfig, examples: Sequence[RagExample], assets: EvaluationAssets,
                    device: str) -> BaseEvaluation:
    """The starting model's evaluation on ``examples``: read from the cache, or computed and published.

    Parallel jobs of a sweep wait for the first one's evaluation instead of repeating it.
    """
    folder = assets.cache_dir / "base_eval" / base_eval_key(cfg, examples, assets)
    with cache_lock(folder):
        reused = (folder / "metrics.json").exists()
        if reused:
            log.info("reusing cached base-model evaluation %s", folder)
            seconds = read_json(folder / "timing.json")["seconds"]
        else:
            seconds = _evaluate_into(cfg, examples, assets, device, folder)
    return BaseEvaluation(folder, dict(read_json(folder / "metrics.json")), read_item_scores(folder), reused,
                          seconds)


def _evaluate_into(cfg: DictConfig, examples: Sequence[RagExample], assets: EvaluationAssets, device: str,
                   folder: Path) -> float:
    """Evaluate the starting model into ``folder`` (published whole); returns the seconds it took."""
    log.info("evaluating the base model once for this eval config (cached in %s)", folder)
    start = time.perf_counter()
    model = load_model(assets.model_path, cfg.model.dtype, device)
    tokenizer = load_tokenizer(assets.model_path)
    with atomic_path(folder) as tmp:
        metrics, _ = evaluate_model(model, tokenizer, cfg, examples, assets, out_dir=tmp)
        seconds = time.perf_counter() - start
        write_json(tmp / "timing.json", {"seconds": seconds})
        write_json(tmp / "metrics.json", metrics)
    del model
    release_memory()
    return seconds
