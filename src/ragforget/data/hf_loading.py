"""``datasets.load_dataset`` for every Hub-or-local-file source (QA sets, general chat data).

With the Hub a source names a dataset id; offline it names ``json`` (or ``parquet``, ``csv``) with
``data_files`` of the same shape. Loader failures become an AssetError saying which keys to set.

A Hub source may pin a ``revision``; :func:`dataset_revision` says what a loaded split was really
read from (the Hub commit, or the sha256 of local files), so a run can record it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ragforget.errors import AssetError, ConfigError
from ragforget.utils.hashing import sha256_file, stable_hash
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

COMMIT = re.compile(r"[0-9a-f]{40}")  # a full git commit sha, as the Hub names revisions


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


def local_fingerprint(data_files: Any) -> str | None:
    """``local:sha256:<hex>`` of the local files in ``data_files`` (None without any): their "commit".

    One file: its sha256, as ``sha256sum`` prints it. Several: the hash of ``data_files`` with every
    path replaced by its file's sha256, so which split a file feeds counts and where it lies does not.
    """
    files = local_files(data_files)
    if not files:
        return None
    if len(files) == 1:
        return f"local:sha256:{sha256_file(files[0])}"

    def digests(item: Any) -> Any:
        if isinstance(item, str):
            return sha256_file(item) if Path(item).exists() else item
        if isinstance(item, list):
            return [digests(value) for value in item]
        if isinstance(item, dict):
            return {key: digests(value) for key, value in item.items()}
        return item

    return f"local:sha256:{stable_hash(digests(data_files), 64)}"


def hub_commit(dataset: Any) -> str | None:
    """The Hub commit a loaded split came from, or None (local files, or a split held in memory).

    ``datasets`` caches a Hub dataset's splits under ``.../<config>/<version>/<commit>/``; offline it
    loads the latest cached version whatever the revision asked, so this is the only reliable witness.
    """
    for cache_file in getattr(dataset, "cache_files", None) or []:
        folder = Path(cache_file["filename"]).parent.name
        if COMMIT.fullmatch(folder):
            return folder
    return None


def dataset_revision(dataset: Any, data_files: Any) -> str | None:
    """What a loaded split was read from: ``local:sha256:...`` of local data files, else its Hub commit."""
    return local_fingerprint(data_files) or hub_commit(dataset)


def check_pinned(dataset: Any, path: str, revision: str | None, config_key: str) -> None:
    """ConfigError unless a split pinned to a commit sha was really loaded from that commit.

    Offline, ``datasets`` silently loads the latest cached version of a Hub dataset instead of the
    pinned one; a branch or tag cannot be checked offline (its commit is logged all the same).
    """
    if not revision or not COMMIT.fullmatch(revision):
        return
    commit = hub_commit(dataset)
    if commit is None:
        log.warning("%s: could not verify that '%s' was loaded at commit %s", config_key, path, revision)
    elif commit != revision:
        raise ConfigError(f"{config_key}.revision", f"pins commit {revision} of '{path}', but the datasets cache "
                          f"only offered commit {commit} (offline, datasets loads the latest cached version)",
                          "set HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 to fetch the pinned commit, or pin "
                          f"{commit}")


def load_split(path: str, split: str, cache_dir: Path, config_key: str, name: str | None = None,
               data_files: Any = None, revision: str | None = None) -> Any:
    """One split as a ``datasets.Dataset``; ``config_key`` (e.g. ``dataset.qa``) goes into the error hint.

    A ``revision`` pinned to a commit sha is checked against the commit really loaded; with local data
    files it means nothing (they are identified by their sha256 instead) and is ignored.
    """
    if revision and local_files(data_files):
        log.warning("%s.revision=%s is ignored: the data are local files", config_key, revision)
        revision = None
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
        dataset = datasets.load_dataset(path, **kwargs)
    except Exception as exc:  # the loader raises many types (network, missing split, bad file)
        raise AssetError(
            f"could not load dataset '{path}' (config {name}, split {split}, data_files {data_files}): "
            f"{type(exc).__name__}: {str(exc)[:400]} (the Hub needs network access and HF_HUB_OFFLINE=0; "
            f"offline, set {config_key}.path=json and {config_key}.data_files to local files of the same shape)"
        ) from exc
    check_pinned(dataset, path, revision, config_key)
    return dataset
