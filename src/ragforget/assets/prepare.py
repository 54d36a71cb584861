"""The prepare stage: fetch and build every asset a run needs (idempotent, cached)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from ragforget.assets.cache import resolve_cache_dir
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
    retention_dir: Path | None


def prepare_assets(cfg: DictConfig) -> PreparedAssets:
    """Materialize model, QA splits, corpus and the retention suite named by ``cfg``."""
    from ragforget.evaluation.retention.suite import prepare_retention_suite

    cache_dir = resolve_cache_dir(cfg.paths.cache_dir)
    source: Any = hydra.utils.instantiate(cfg.model.source)
    model_path = source.materialize(cache_dir)
    qa: Any = hydra.utils.instantiate(cfg.dataset.qa)
    splits = qa.materialize(cache_dir)
    corpus: Any = hydra.utils.instantiate(cfg.dataset.corpus)
    corpus_path = corpus.materialize(cache_dir)
    heldout = corpus.heldout_summaries_path(cache_dir)
    retention_dir = None
    if cfg.eval.retention.suite == "offline":
        retention_dir = prepare_retention_suite(
            tasks=list(cfg.eval.retention.tasks), limit=cfg.eval.retention.limit, seed=cfg.eval.retention.seed,
            cache_dir=cache_dir, heldout_summaries=heldout,
        )
    log.info("assets ready in %s", cache_dir)
    return PreparedAssets(cache_dir, model_path, splits, Path(corpus_path), heldout, retention_dir)
