"""Stable content hashes used as cache keys."""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large archives do not load into memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def stable_hash(obj: Any, length: int = 12) -> str:
    """Short hash of a JSON-serializable object, independent of dict key order."""
    payload = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:length]


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of the libraries that shape a cached result (part of its cache key)."""
    return {name: version(name) for name in names}


def source_fingerprint(*modules: str) -> str:
    """Hash of the source files of ``modules`` (a package: all of its .py files).

    The code that computes a cached result is part of what determines it; the project's version
    string is a constant during development, so a cache key takes the code itself.
    """
    digest = hashlib.sha256()
    for module in modules:
        spec = find_spec(module)
        if spec is None or spec.origin is None:
            raise ValueError(f"no module named {module}")
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for file in files:
            digest.update(file.relative_to(origin.parent).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def tree_fingerprint(root: str | Path) -> str:
    """Hash of every file's relative path and content under ``root`` (a small folder, e.g. a suite)."""
    root = Path(root)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()[:12]


MODEL_LIBRARIES = ("torch", "transformers", "peft")


def code_and_versions(*modules: str, libraries: tuple[str, ...] = MODEL_LIBRARIES) -> dict[str, Any]:
    """What a cached model computation depends on besides its inputs: our code and the library versions."""
    return {"code": source_fingerprint(*modules), "libraries": package_versions(*libraries)}


def stat_fingerprint(root: str | Path) -> str:
    """Hash of every file's relative path, size and mtime under ``root``: a cheap signature of a large
    folder (model weights) that changes when any file is rewritten."""
    root = Path(root)
    if not root.exists():
        return "absent"
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    return stable_hash([(p.relative_to(root).as_posix() if root.is_dir() else p.name, p.stat().st_size,
                         p.stat().st_mtime_ns) for p in files])
