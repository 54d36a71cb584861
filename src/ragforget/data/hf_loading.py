"""``datasets.load_dataset`` for every Hub-or-local-file source (QA sets, general chat data).

With the Hub a source names a dataset id; offline it names ``json`` (or ``parquet``, ``csv``) with
``data_files`` of the same shape. Loader failures become an AssetError saying which keys to set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ragforget.utils.config import plain
from ragforget.errors import AssetError


def absolute_local(data_files: Any) -> Any:
    """Make local data file paths absolute (``datasets`` resolves relative ones against the CWD)."""
    if isinstance(data_files, str):
        candidate = Path(data_files).expanduser()
        return str(candidate.resolve()) if candidate.exists() else data_files
    if isinstance(data_files, list):
        return [absolute_local(item) for item in data_files]
    if isinstance(data_files, dict):
        return {key: absolute_local(item) for key, item in data_files.items()}
    return data_files


def local_files(data_files: Any) -> list[str]:
    """Every existing local path named in ``data_files`` (their content belongs in the cache key)."""
    if isinstance(data_files, str):
        return [data_files] if Path(data_files).exists() else []
    if isinstance(data_files, list):
        return [path for item in data_files for path in local_files(item)]
    if isinstance(data_files, dict):
        return [path for item in data_files.values() for path in local_files(item)]
    return []


def load_split(path: str, split: str, cache_dir: Path, config_key: str, name: str | None = None,
               data_files: Any = None, revision: str | None = None) -> Any:
    """One split as a ``datasets.Dataset``; ``config_key`` (e.g. ``dataset.qa``) goes into the error hint."""
    from ragforget.env import apply_defaults

    apply_defaults()
    import datasets  # imported late: its offline switches are read at import time

    kwargs: dict[str, Any] = {"split": split, "cache_dir": str(Path(cache_dir) / "hf_datasets")}
    if name:
        kwargs["name"] = name
    if data_files is not None:
        kwargs["data_files"] = data_files
    if revision:
        kwargs["revision"] = revision
    try:
        return datasets.load_dataset(path, **kwargs)
    except Exception as exc:  # the loader raises many types (network, missing split, bad file)
        raise AssetError(
            f"could not load dataset '{path}' (config {name}, split {split}, data_files {data_files}): "
            f"{type(exc).__name__}: {str(exc)[:400]} (the Hub needs network access and HF_HUB_OFFLINE=0; "
            f"offline, set {config_key}.path=json and {config_key}.data_files to local files of the same shape)"
        ) from exc
