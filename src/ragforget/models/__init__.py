"""Model sources (packaged GGUF, hub id or local dir, tiny random) and loading helpers."""
