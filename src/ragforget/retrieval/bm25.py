"""Sparse retrieval with bm25s (Lucene BM25 scoring, English stopwords, no stemming)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import bm25s

from ragforget.errors import DataError
from ragforget.retrieval.base import Hit, Retriever
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

IDS_FILE = "ids.json"


class BM25Retriever(Retriever):
    """BM25 over passage contents (title line included)."""

    name: ClassVar[str] = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, stopwords: str | None = "en") -> None:
        self.k1 = float(k1)
        self.b = float(b)
        self.stopwords = stopwords
        self._model: bm25s.BM25 | None = None
        self._ids: list[str] = []

    def cache_params(self) -> dict[str, Any]:
        """BM25 parameters and the tokenizer settings (bm25s version too: it defines tokenization)."""
        return {"k1": self.k1, "b": self.b, "stopwords": self.stopwords, "bm25s": bm25s.__version__}

    def _tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        return bm25s.tokenize(list(texts), stopwords=self.stopwords or [], return_ids=False, show_progress=False)

    def build_index(self, corpus: list[dict[str, Any]], index_dir: Path) -> None:
        """Tokenize and index the corpus; save the score matrix, vocabulary and passage ids."""
        model = bm25s.BM25(k1=self.k1, b=self.b)
        # create_empty_token=False: bm25s 0.3.16 adds "" to the vocabulary but not to the score
        # matrix, so a query reduced to "" would crash; empty queries are handled in search().
        model.index(self._tokenize([doc["contents"] for doc in corpus]), create_empty_token=False,
                    show_progress=False)
        index_dir.mkdir(parents=True, exist_ok=True)
        model.save(str(index_dir), show_progress=False)
        (index_dir / IDS_FILE).write_text(json.dumps([doc["id"] for doc in corpus]), encoding="utf-8")
        self._model, self._ids = model, [doc["id"] for doc in corpus]

    def load_index(self, index_dir: Path) -> None:
        """Load the saved BM25 matrix and ids."""
        ids_path = index_dir / IDS_FILE
        if not ids_path.exists():
            raise DataError(ids_path, None, "BM25 index is incomplete", "delete the index folder to rebuild it")
        self._model = bm25s.BM25.load(str(index_dir), show_progress=False)
        self._ids = json.loads(ids_path.read_text(encoding="utf-8"))

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-``k`` passages per query (``k`` capped at the corpus size), best first.

        A query sharing no word with the corpus scores 0 everywhere; like bm25s's own zero-score
        padding it gets the first ``k`` passages in corpus order, so every query has ``k`` hits.
        """
        if self._model is None:
            raise RuntimeError("BM25Retriever.search called before build_index/load_index")
        k = min(k, len(self._ids))
        if k <= 0 or not queries:
            return [[] for _ in queries]
        vocab = self._model.vocab_dict
        tokens = [[t for t in query if t in vocab] for query in self._tokenize(queries)]
        scorable = [i for i, query in enumerate(tokens) if query]
        if len(scorable) < len(tokens):
            log.warning("%d of %d queries share no word with the BM25 vocabulary; they get zero-score hits",
                        len(tokens) - len(scorable), len(tokens))
        results: list[list[Hit]] = [[(doc_id, 0.0) for doc_id in self._ids[:k]] for _ in queries]
        if scorable:
            docs, scores = self._model.retrieve([tokens[i] for i in scorable], k=k, show_progress=False)
            for row, i in enumerate(scorable):
                results[i] = [(self._ids[int(d)], float(s)) for d, s in zip(docs[row], scores[row])]
        return results
