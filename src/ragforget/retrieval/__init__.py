"""Retrieval: BM25, dense (MiniLM + faiss), oracle and closed book, with cached indexes and results."""

from ragforget.retrieval.base import Hit, Retriever
from ragforget.retrieval.cache import ensure_index, index_key, retrieve_split
from ragforget.retrieval.metrics import has_answer, normalize_answer, recall_at_k

__all__ = ["Hit", "Retriever", "ensure_index", "has_answer", "index_key", "normalize_answer", "recall_at_k",
           "retrieve_split"]
