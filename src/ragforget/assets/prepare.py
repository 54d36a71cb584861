"""The prepare stage: fetch and build every asset a run needs (idempotent, cached)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ragforget.assets.cache import resolve_cache_dir
from ragforget.utils.instantiate import instantiate
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


@dataclass
class PreparedAssets:
    """Paths to everything a run reads, all inside the cache."""

    cache_dir: Path
    model_path: str
    splits: dict[str, Path]
    corpus_path: Path
    heldout_summaries: Path | None
    retention: Any            # a retention suite (eval.retention._target_), prepared
    shift_prompts: list[str]  # general prompts for the distribution-shift measure


def prepare_assets(cfg: DictConfig) -> PreparedAssets:
    """Materialize model, QA splits, corpus and the retention suite named by ``cfg``."""
    from ragforget.evaluation.retention.suite import general_prompts, prepare_retention_suite

    cache_dir = resolve_cache_dir(cfg.paths.cache_dir)
    source: Any = instantiate(cfg.model.source)
    model_path = source.materialize(cache_dir)
    qa: Any = instantiate(cfg.dataset.qa)
    splits = qa.materialize(cache_dir)
    corpus: Any = instantiate(cfg.dataset.corpus)
    corpus_path = corpus.materialize(cache_dir)
    heldout = corpus.heldout_summaries_path(cache_dir)
    retention: Any = instantiate(cfg.eval.retention)
    retention.prepare(cache_dir, heldout)
    # The shift prompts do not depend on the retention task selection, so shift/kl stays comparable
    # across eval configs: IFEval-style requests and held-out summaries, interleaved.
    shift_dir = prepare_retention_suite(["ifeval_like", "wiki_ppl"], limit=cfg.eval.shift.num_texts,
                                        seed=cfg.eval.shift.seed, cache_dir=cache_dir, heldout_summaries=heldout)
    log.info("assets ready in %s", cache_dir)
    return PreparedAssets(cache_dir, model_path, splits, Path(corpus_path), heldout, retention,
                          general_prompts(shift_dir, cfg.eval.shift.num_texts))
