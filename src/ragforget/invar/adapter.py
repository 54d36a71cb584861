"""A saved retriever adapter folder: its files and its content hash."""

from __future__ import annotations

from pathlib import Path

from ragforget.errors import DataError
from ragforget.utils.hashing import sha256_file, stable_hash

PROVENANCE_FILE = "provenance.json"   # which run trained it, on what, and its hash at save time
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def adapter_hash(folder: Path) -> str:
    """Content hash of a saved adapter (weights and config): the index and stage 2 key on it."""
    files = [Path(folder) / ADAPTER_WEIGHTS, Path(folder) / "adapter_config.json"]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise DataError(folder, None, f"not a saved retriever adapter (missing {missing})",
                        "point retriever.impl.adapter at a folder written by stage 1, or set it to null to "
                        "train one")
    return stable_hash([sha256_file(f) for f in files])
