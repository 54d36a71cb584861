"""Invar-RAG (Liu et al., arXiv 2411.07021): the LLM as its own retriever, then generation on its passages."""
