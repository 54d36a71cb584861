"""Open-domain QA sets from the Hugging Face Hub (NQ-open, TriviaQA, PopQA) mapped into the QA schema.

The code path is ``datasets.load_dataset(path, name, split=..., data_files=...)``: with the Hub it
loads e.g. ``google-research-datasets/nq_open``; offline it loads local files of the same shape with
``path: json`` and ``data_files``. Answers come in three shapes, all handled by
:func:`parse_answers`: a list of strings (NQ-open), a dict of fields (TriviaQA's ``answer.value`` /
``answer.aliases``), or a JSON-encoded list in a string (PopQA's ``possible_answers``).

``revision`` pins the Hub commit; what the splits were really read from (the commit, or the sha256
of local files) is :attr:`HubQA.resolved_revision`, kept in the cached splits' manifest.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ragforget.data.hf_loading import (
    absolute_local,
    dataset_revision,
    hub_commit,
    load_split,
    local_files,
    local_fingerprint,
)
from ragforget.data.records import cached_splits, make_qa_record, write_splits
from ragforget.errors import ConfigError, DataError
from ragforget.utils.config import plain
from ragforget.utils.hashing import sha256_file, stable_hash
from ragforget.utils.io import cache_lock, read_json
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

# Bump when the record mapping changes, so cached splits are rebuilt.
FORMAT_VERSION = 1


def parse_answers(value: Any, answer_keys: Sequence[str] | None, where: str) -> list[str]:
    """Turn one row's answers field into a list of strings (may contain duplicates).

    ``answer_keys`` selects the sub-fields of a dict-shaped answer (each a string or list of strings).
    """
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            # PopQA stores its answer list as a JSON string.
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                raise DataError(where, None,
                                f"answers look like a JSON list but do not parse: {value[:80]!r}") from None
        else:
            return [value]
    if isinstance(value, Mapping):
        if not answer_keys:
            raise ConfigError("dataset.qa.answer_keys", f"answers at {where} are a dict with keys {sorted(value)}",
                              "list the keys to take answers from, e.g. [value, aliases]")
        absent = [key for key in answer_keys if key not in value]
        if absent:
            raise ConfigError("dataset.qa.answer_keys", f"key(s) {absent} not in the answer dict at {where}",
                              f"available keys: {sorted(value)}")
        answers: list[str] = []
        for key in answer_keys:
            answers += parse_answers(value[key], None, where)
        return answers
    if isinstance(value, Sequence) and all(isinstance(item, str) for item in value):
        return list(value)
    raise DataError(where, None, f"answers must be a string, a list of strings or a dict, got {value!r:.80}")


def check_fields(column_names: Sequence[str], fields: Mapping[str, str | None], source: str) -> None:
    """Raise ConfigError naming the config key, the missing field and the fields that exist."""
    for key, field in fields.items():
        if field is not None and field not in column_names:
            raise ConfigError(f"dataset.qa.{key}", f"field '{field}' not in {source}",
                              f"available fields: {sorted(column_names)}")


def select_rows(n_rows: int, max_size: int | None, seed: int) -> list[int]:
    """Row indices to keep: all, or a seeded sample of ``max_size`` kept in dataset order."""
    if max_size is None or max_size >= n_rows:
        return list(range(n_rows))
    return sorted(random.Random(seed).sample(range(n_rows), max_size))


def map_rows(rows: Sequence[Mapping[str, Any]], *, prefix: str, question_field: str, answers_field: str,
             answer_keys: Sequence[str] | None, id_field: str | None, metadata_fields: Sequence[str],
             source: str, indices: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Pure: hub rows -> QA records; rows without any answer are dropped with a logged count.

    ``indices`` are the rows' positions in the hub split (default 0..n-1); they name the row in
    errors, in ``metadata.row``, and in the record id when there is no ``id_field``.
    """
    if rows:
        check_fields(list(rows[0]), {"question_field": question_field, "answers_field": answers_field,
                                     "id_field": id_field}, source)
        for field in metadata_fields:
            check_fields(list(rows[0]), {"metadata_fields": field}, source)
    records: list[dict[str, Any]] = []
    dropped = 0
    for index, row in zip(indices if indices is not None else range(len(rows)), rows, strict=True):
        where = f"{source} row {index}"
        answers = parse_answers(row[answers_field], answer_keys, where)
        record_id = f"{prefix}-{row[id_field]}" if id_field else f"{prefix}-{index}"
        metadata = {"gold_passage_id": None, "row": index, **{field: row[field] for field in metadata_fields}}
        record = make_qa_record(record_id, str(row[question_field]), answers, metadata)
        if not record["golden_answers"]:
            dropped += 1
            continue
        records.append(record)
    if dropped:
        log.warning("%s: dropped %d row(s) without any answer", source, dropped)
    return records


class HubQA:
    """A QA set loaded with ``datasets.load_dataset`` and mapped into the QA schema, split by split."""

    def __init__(self, name: str, path: str, splits: Mapping[str, str], question_field: str = "question",
                 answers_field: str = "answer", answer_keys: Sequence[str] | None = None,
                 id_field: str | None = None, config_name: str | None = None, data_files: Any = None,
                 revision: str | None = None, max_size: int | Mapping[str, int | None] | None = None,
                 metadata_fields: Sequence[str] = (), seed: int = 0) -> None:
        if not splits:
            raise ConfigError("dataset.qa.splits", "no splits given", "e.g. {train: train, test: validation}")
        self.name = name
        self.path = path
        self.config_name = config_name
        self.splits = {str(ours): str(theirs) for ours, theirs in plain(splits).items()}
        self.question_field = question_field
        self.answers_field = answers_field
        self.answer_keys = plain(answer_keys) if answer_keys else None
        self.id_field = id_field
        self.data_files = absolute_local(plain(data_files))
        self.revision = revision
        self.max_size = plain(max_size)
        self.metadata_fields = list(plain(metadata_fields))
        self.seed = int(seed)
        # What the splits were read from (Hub commit or local:sha256:...), known after materialize.
        self.resolved_revision: str | None = None

    def split_max_size(self, split: str) -> int | None:
        """The cap for one of our splits (an int caps every split; a mapping caps by split name)."""
        if isinstance(self.max_size, Mapping):
            return self.max_size.get(split)
        return self.max_size

    def cache_key(self) -> str:
        """Hash of the loading and mapping parameters, plus the content of any local data files."""
        params = {key: value for key, value in vars(self).items() if key not in ("name", "resolved_revision")}
        params["local_files"] = {path: sha256_file(path) for path in local_files(self.data_files)}
        params["format"] = FORMAT_VERSION
        return stable_hash(params)

    def directory(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / "data" / f"{self.name}-{self.cache_key()}"

    def load_hub_split(self, hub_split: str, cache_dir: Path, revision: str | None) -> Any:
        """One hub split at ``revision``, as a ``datasets.Dataset``."""
        return load_split(self.path, hub_split, cache_dir, "dataset.qa", name=self.config_name,
                          data_files=self.data_files, revision=revision)

    def load_all(self, cache_dir: Path) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
        """``{our split: hub rows}`` and the revision they were read from.

        The first split resolves ``revision`` (e.g. a branch) to a commit; the others load that commit,
        so a push to the Hub between two splits cannot mix two versions.
        """
        rows: dict[str, list[dict[str, Any]]] = {}
        revision, resolved = self.revision, None
        for ours, theirs in self.splits.items():
            dataset = self.load_hub_split(theirs, cache_dir, revision)
            rows[ours] = dataset.to_list()
            if resolved is None:
                resolved = dataset_revision(dataset, self.data_files)
                revision = hub_commit(dataset) or revision
        return rows, resolved

    def recorded_revision(self, directory: Path) -> str | None:
        """The revision kept in cached splits' manifest (older caches: the local files' sha256, if any)."""
        manifest = directory / "manifest.json"
        recorded = read_json(manifest).get("resolved_revision") if manifest.exists() else None
        return recorded or local_fingerprint(self.data_files)

    def build(self, rows_by_split: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        """Pure: ``{our split: hub rows}`` -> ``{our split: QA records}``, capped by ``max_size``."""
        out: dict[str, list[dict[str, Any]]] = {}
        for split, rows in rows_by_split.items():
            keep = select_rows(len(rows), self.split_max_size(split), self.seed)
            out[split] = map_rows([rows[i] for i in keep], prefix=f"{self.name}-{split}",
                                  question_field=self.question_field, answers_field=self.answers_field,
                                  answer_keys=self.answer_keys, id_field=self.id_field,
                                  metadata_fields=self.metadata_fields,
                                  source=f"{self.path}:{self.splits[split]}", indices=keep)
        return out

    def materialize(self, cache_dir: Path) -> dict[str, Path]:
        """Return ``{split: jsonl path}``, loading from the Hub (or local files) once per cache key."""
        directory = self.directory(cache_dir)
        with cache_lock(directory):  # parallel jobs load it once
            cached = cached_splits(directory, self.splits)
            if cached is not None:
                self.resolved_revision = self.recorded_revision(directory)
                return cached
            return self._build_splits(Path(cache_dir), directory)

    def _build_splits(self, cache_dir: Path, directory: Path) -> dict[str, Path]:
        rows, self.resolved_revision = self.load_all(cache_dir)
        splits = self.build(rows)
        manifest = {"name": self.name, "path": self.path, "config_name": self.config_name,
                    "splits": self.splits, "revision": self.revision, "resolved_revision": self.resolved_revision,
                    "max_size": self.max_size, "seed": self.seed, "data_files": self.data_files}
        paths = write_splits(directory, splits, manifest)
        log.info("%s splits: %s (from %s)", self.name, {split: len(records) for split, records in splits.items()},
                 self.resolved_revision)
        return paths
