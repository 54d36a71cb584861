"""Retrieval: BM25, dense (MiniLM + faiss), oracle and closed book, with cached indexes and results."""
