"""ragforget: RAG fine-tuning of LLMs without losing their general abilities."""

__version__ = "0.1.0"
