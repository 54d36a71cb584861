"""The retrieve stage: ranked passage ids per question (cached) and retrieval recall."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ragforget.errors import ConfigError
from ragforget.retrieval.base import Retriever
from ragforget.retrieval.cache import retrieve_split
from ragforget.retrieval.metrics import recall_at_k
from ragforget.utils.hashing import sha256_file, stable_hash
from ragforget.utils.instantiate import instantiate

RECALL_KS = (1, 3, 5)


def check_top_k(top_k: int, n_passages: int) -> None:
    """ConfigError on ``retriever.top_k`` when it asks for more passages than the corpus holds.

    Retrievers quietly return fewer hits then: the prompts would hold fewer passages than the run's
    logged top_k says (and the oracle's gold passage would sit among fewer distractors).
    """
    if top_k > n_passages:
        raise ConfigError("retriever.top_k", f"is {top_k}, but the corpus holds only {n_passages} passage(s)",
                          f"set retriever.top_k <= {n_passages}, or use a larger corpus (dataset.corpus)")


def build_retriever(cfg: DictConfig) -> Retriever:
    """The retriever ``retriever.impl`` names (bm25, dense, oracle, closed book, invar)."""
    retriever: Retriever = instantiate(cfg.retriever.impl)
    return retriever


def retrieve(cfg: DictConfig, retriever: Retriever, records: Sequence[Mapping[str, Any]], split: str,
             split_path: Path, corpus_path: Path, cache_dir: Path, corpus_hash: str, k: int | None = None
             ) -> dict[str, list[str]]:
    """Top-k passage ids for each record (question id -> ids), cached per split content.

    ``k`` defaults to ``retriever.top_k`` (what the prompts use).
    """
    k = int(cfg.retriever.top_k if k is None else k)
    if k == 0 or not records:
        return {str(r["id"]): [] for r in records}
    ids_key = stable_hash([sha256_file(split_path), [r["id"] for r in records]])
    rows = retrieve_split(retriever, list(records), k, corpus_path, cache_dir,
                          split_key=f"{cfg.dataset.name}-{split}-{ids_key}", corpus_hash=corpus_hash)
    return {str(row["id"]): list(row["doc_ids"]) for row in rows}


def retrieval_recall(retrieved: Mapping[str, list[str]], records: Sequence[Mapping[str, Any]],
                     corpus_by_id: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """recall@k for the standard ks up to the retrieved depth (empty for closed book)."""
    depth = max((len(v) for v in retrieved.values()), default=0)
    if depth == 0:
        return {}
    ks = sorted({k for k in RECALL_KS if k <= depth} | {depth})
    rows = [{"id": qid, "doc_ids": ids} for qid, ids in retrieved.items()]
    return recall_at_k(rows, records, corpus_by_id, ks=ks)
