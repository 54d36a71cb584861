"""Index and retrieval-result caches, keyed by retriever parameters and corpus hash.

Layout under the cache root:
  indexes/<name>-<hash(params, corpus)>/                    one index per retriever config and corpus
  retrieved/<name>-<hash(params, corpus)>-k<k>/<split>.jsonl  {id, doc_ids, scores} per question
Both are written atomically and reused when present, so a crash never leaves a half index behind
and repeated runs skip the work.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ragforget.errors import DataError
from ragforget.retrieval.base import Retriever
from ragforget.utils.hashing import sha256_file, stable_hash
from ragforget.utils.io import atomic_path, cache_lock, read_jsonl, write_json, write_jsonl
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

INDEX_META = "index_meta.json"
RESULT_FIELDS = ("id", "doc_ids", "scores")


def index_key(retriever: Retriever, corpus_hash: str) -> str:
    """Folder name identifying this retriever configuration over this corpus."""
    return f"{retriever.name}-{stable_hash({'params': retriever.cache_params(), 'corpus': corpus_hash})}"


def read_corpus(corpus_path: Path) -> list[dict[str, Any]]:
    """Read corpus records, refusing duplicate ids (they would make retrieved ids ambiguous)."""
    corpus = read_jsonl(corpus_path, required=("id", "contents"))
    seen: set[str] = set()
    for line_no, doc in enumerate(corpus, start=1):
        if doc["id"] in seen:
            raise DataError(corpus_path, line_no, f"duplicate passage id {doc['id']!r}",
                            "passage ids must be unique; rebuild the corpus")
        seen.add(doc["id"])
    return corpus


def ensure_index(retriever: Retriever, corpus_path: str | Path, corpus_hash: str, cache_dir: str | Path) -> None:
    """Make ``retriever`` ready to search: load its cached index, or build and cache it (and its dependencies')."""
    for dependency in retriever.dependencies():
        ensure_index(dependency, corpus_path, corpus_hash, cache_dir)
    if not retriever.needs_index:
        return
    index_dir = Path(cache_dir) / "indexes" / index_key(retriever, corpus_hash)
    with cache_lock(index_dir):  # parallel jobs build it once
        start = time.perf_counter()
        if index_dir.is_dir():
            retriever.load_index(index_dir)
            log.info("loaded %s index %s in %.1fs", retriever.name, index_dir, time.perf_counter() - start)
        else:
            _build_index(retriever, corpus_path, corpus_hash, index_dir)


def _build_index(retriever: Retriever, corpus_path: str | Path, corpus_hash: str, index_dir: Path) -> None:
    start = time.perf_counter()
    corpus = read_corpus(Path(corpus_path))
    with atomic_path(index_dir) as tmp_dir:
        retriever.build_index(corpus, tmp_dir)
        seconds = time.perf_counter() - start
        # Provenance: what this index was built from, next to the index itself.
        write_json(tmp_dir / INDEX_META, {
            "retriever": retriever.name, "params": retriever.cache_params(), "corpus_path": str(corpus_path),
            "corpus_hash": corpus_hash, "num_passages": len(corpus), "build_seconds": round(seconds, 2),
        })
    log.info("built %s index over %d passages in %.1fs -> %s", retriever.name, len(corpus), seconds, index_dir)


def retrieved_path(retriever: Retriever, k: int, corpus_hash: str, cache_dir: str | Path, split_key: str) -> Path:
    """Where the top-``k`` results of one split are cached."""
    return Path(cache_dir) / "retrieved" / f"{index_key(retriever, corpus_hash)}-k{k}" / f"{split_key}.jsonl"


def retrieve_split(
    retriever: Retriever,
    records: Sequence[Mapping[str, Any]],
    k: int,
    corpus_path: str | Path,
    cache_dir: str | Path,
    split_key: str,
    corpus_hash: str | None = None,
) -> list[dict[str, Any]]:
    """Top-``k`` results ({id, doc_ids, scores}) for each QA record, in record order; cached per split.

    ``split_key`` must change whenever the split's content does (e.g. "squad_open-<hash>-test");
    a cached file whose ids do not match ``records`` is recomputed rather than trusted.
    ``corpus_hash`` defaults to the sha256 of ``corpus_path``.
    """
    corpus_hash = corpus_hash or sha256_file(corpus_path)
    path = retrieved_path(retriever, k, corpus_hash, cache_dir, split_key)
    with cache_lock(path):  # parallel jobs retrieve it once
        return _retrieve_split(retriever, records, k, corpus_path, cache_dir, corpus_hash, path)


def _retrieve_split(retriever: Retriever, records: Sequence[Mapping[str, Any]], k: int, corpus_path: str | Path,
                    cache_dir: str | Path, corpus_hash: str, path: Path) -> list[dict[str, Any]]:
    wanted = [str(record["id"]) for record in records]
    if path.exists():
        cached = read_jsonl(path, required=RESULT_FIELDS)
        if [row["id"] for row in cached] == wanted:
            log.info("reusing %d cached %s results from %s", len(cached), retriever.name, path)
            return cached
        log.warning("%s does not match the %d requested question ids; retrieving again", path, len(wanted))
    ensure_index(retriever, corpus_path, corpus_hash, cache_dir)
    start = time.perf_counter()
    hits = retriever.search_records(records, k)
    seconds = time.perf_counter() - start
    rows = [{"id": qid, "doc_ids": [doc_id for doc_id, _ in row], "scores": [score for _, score in row]}
            for qid, row in zip(wanted, hits)]
    write_jsonl(path, rows)
    log.info("retrieved top-%d for %d questions with %s in %.1fs (%.1f ms/question) -> %s",
             k, len(rows), retriever.name, seconds, 1000 * seconds / max(len(rows), 1), path)
    return rows
