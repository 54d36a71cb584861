"""Index and result caches: hits reuse, changed parameters or corpus rebuild, failures leave nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import visible

from ragforget.retrieval.base import Hit
from ragforget.retrieval.bm25 import BM25Retriever
from ragforget.retrieval.cache import INDEX_META, ensure_index, index_key, retrieve_split
from ragforget.retrieval.closed_book import ClosedBookRetriever
from ragforget.utils.io import read_json, write_jsonl

CORPUS = [
    {"id": f"p{i}", "title": title, "contents": f"{title}\n{text}"}
    for i, (title, text) in enumerate([
        ("Jupiter", "Jupiter is the largest planet."),
        ("Tango", "The tango comes from Buenos Aires."),
        ("Honey", "Bees make honey from nectar."),
        ("Ice", "Ice floats on water."),
        ("Glass", "Glass is made from sand."),
    ])
]
RECORDS = [
    {"id": "q1", "question": "What is the largest planet?", "golden_answers": ["Jupiter"], "metadata": {}},
    {"id": "q2", "question": "What do bees make?", "golden_answers": ["honey"], "metadata": {}},
]


class CountingBM25(BM25Retriever):
    """BM25 that counts index builds and searches, to observe cache hits."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.builds = 0
        self.searches = 0

    def build_index(self, corpus: list[dict[str, Any]], index_dir: Path) -> None:
        self.builds += 1
        super().build_index(corpus, index_dir)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        self.searches += 1
        return super().search(queries, k)


class FailingBM25(BM25Retriever):
    """BM25 whose build writes part of an index, then fails."""

    def build_index(self, corpus: list[dict[str, Any]], index_dir: Path) -> None:
        index_dir.mkdir(parents=True)
        (index_dir / "partial.npy").write_bytes(b"half")
        raise RuntimeError("disk full")


@pytest.fixture
def corpus_path(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "corpus.jsonl", CORPUS)


def test_index_cache_hit_does_not_rebuild(tmp_path: Path, corpus_path: Path) -> None:
    first = CountingBM25()
    ensure_index(first, corpus_path, "hash-a", tmp_path / "cache")
    second = CountingBM25()
    ensure_index(second, corpus_path, "hash-a", tmp_path / "cache")
    assert (first.builds, second.builds) == (1, 0)
    assert second.search(["largest planet"], 1)[0][0][0] == "p0"  # the loaded index works
    meta = read_json(tmp_path / "cache" / "indexes" / index_key(second, "hash-a") / INDEX_META)
    assert meta["corpus_hash"] == "hash-a" and meta["num_passages"] == len(CORPUS) and meta["params"]["k1"] == 1.5


def test_changed_params_or_corpus_hash_rebuild(tmp_path: Path, corpus_path: Path) -> None:
    cache = tmp_path / "cache"
    ensure_index(CountingBM25(), corpus_path, "hash-a", cache)
    other_params, other_corpus = CountingBM25(k1=0.9), CountingBM25()
    ensure_index(other_params, corpus_path, "hash-a", cache)
    ensure_index(other_corpus, corpus_path, "hash-b", cache)
    assert (other_params.builds, other_corpus.builds) == (1, 1)
    assert len(visible(cache / "indexes")) == 3


def test_failed_build_leaves_no_index(tmp_path: Path, corpus_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_index(FailingBM25(), corpus_path, "hash-a", cache)
    assert visible(cache / "indexes") == []


def test_retrieve_split_caches_results_per_split(tmp_path: Path, corpus_path: Path) -> None:
    cache = tmp_path / "cache"
    first = CountingBM25()
    rows = retrieve_split(first, RECORDS, 2, corpus_path, cache, "toy-abc-test", corpus_hash="hash-a")
    assert [row["id"] for row in rows] == ["q1", "q2"]
    assert [row["doc_ids"][0] for row in rows] == ["p0", "p2"]
    assert all(len(row["doc_ids"]) == len(row["scores"]) == 2 for row in rows)
    again = CountingBM25()
    assert retrieve_split(again, RECORDS, 2, corpus_path, cache, "toy-abc-test", corpus_hash="hash-a") == rows
    assert (again.builds, again.searches) == (0, 0)  # neither index nor search touched
    # Another split, another k, or records that no longer match the cached ids: computed again.
    retrieve_split(again, RECORDS[:1], 2, corpus_path, cache, "toy-abc-dev", corpus_hash="hash-a")
    retrieve_split(again, RECORDS, 1, corpus_path, cache, "toy-abc-test", corpus_hash="hash-a")
    retrieve_split(again, RECORDS[::-1], 2, corpus_path, cache, "toy-abc-test", corpus_hash="hash-a")
    assert (again.builds, again.searches) == (0, 3)


def test_retrieve_split_hashes_the_corpus_by_default(tmp_path: Path, corpus_path: Path) -> None:
    rows = retrieve_split(BM25Retriever(), RECORDS, 1, corpus_path, tmp_path / "cache", "toy-test")
    assert rows[0]["doc_ids"] == ["p0"]
    (key_dir,) = visible(tmp_path / "cache" / "retrieved")
    assert key_dir.startswith("bm25-") and key_dir.endswith("-k1")


def test_closed_book_needs_no_index(tmp_path: Path, corpus_path: Path) -> None:
    rows = retrieve_split(ClosedBookRetriever(), RECORDS, 0, corpus_path, tmp_path / "cache", "toy-test")
    assert rows == [{"id": "q1", "doc_ids": [], "scores": []}, {"id": "q2", "doc_ids": [], "scores": []}]
    assert not (tmp_path / "cache" / "indexes").exists()


def test_duplicate_corpus_ids_are_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "dup.jsonl", [CORPUS[0], CORPUS[1], CORPUS[0]])
    with pytest.raises(Exception, match=r"dup.jsonl:3: duplicate passage id 'p0'"):
        ensure_index(BM25Retriever(), path, "h", tmp_path / "cache")
