"""The two record schemas every stage exchanges (FlashRAG jsonl): QA records and corpus passages.

QA: ``{"id", "question", "golden_answers": [str, ...], "metadata": {"gold_passage_id": str | None, ...}}``
corpus: ``{"id", "contents": "<title>\\n<text>", "title"}``
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ragforget.errors import DataError
from ragforget.utils.hashing import sha256_file
from ragforget.utils.io import atomic_path, iter_jsonl, write_json, write_jsonl

QA_FIELDS: tuple[str, ...] = ("id", "question", "golden_answers")
CORPUS_FIELDS: tuple[str, ...] = ("id", "contents")


def seeded_subset(records: Sequence[dict[str, Any]], size: int | None, seed: int) -> list[dict[str, Any]]:
    """A reproducible sample of ``size`` records in their original order (all if size is None or larger)."""
    if size is None or size >= len(records):
        return list(records)
    keep = sorted(random.Random(seed).sample(range(len(records)), size))
    return [records[i] for i in keep]


def dedupe_answers(answers: Iterable[str]) -> list[str]:
    """Strip answers and drop empty and repeated ones, keeping first-seen order."""
    seen: dict[str, None] = {}
    for answer in answers:
        text = answer.strip()
        if text:
            seen.setdefault(text, None)
    return list(seen)


def make_qa_record(record_id: str, question: str, answers: Iterable[str],
                   metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build one QA record; ``gold_passage_id`` defaults to None (no known gold passage)."""
    meta = {"gold_passage_id": None, **(metadata or {})}
    return {"id": record_id, "question": question.strip(), "golden_answers": dedupe_answers(answers),
            "metadata": meta}


def make_passage(passage_id: str, title: str, text: str) -> dict[str, str]:
    """Build one corpus record; ``contents`` puts the title on the first line, as FlashRAG does."""
    return {"id": passage_id, "contents": f"{title}\n{text.strip()}", "title": title}


def check_qa_record(record: dict[str, Any], path: str | Path, line: int | None) -> None:
    """Raise DataError (naming file, line and field) unless ``record`` fits the QA schema."""
    if not isinstance(record.get("id"), str) or not record["id"]:
        raise DataError(path, line, "field 'id' must be a non-empty string")
    if not isinstance(record.get("question"), str) or not record["question"].strip():
        raise DataError(path, line, "field 'question' must be a non-empty string")
    answers = record.get("golden_answers")
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise DataError(path, line, f"field 'golden_answers' must be a non-empty list of strings, got {answers!r}")
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise DataError(path, line, f"field 'metadata' must be an object, got {type(metadata).__name__}")


def check_passage(record: dict[str, Any], path: str | Path, line: int | None) -> None:
    """Raise DataError (naming file, line and field) unless ``record`` fits the corpus schema."""
    if not isinstance(record.get("id"), str) or not record["id"]:
        raise DataError(path, line, "field 'id' must be a non-empty string")
    if not isinstance(record.get("contents"), str) or not record["contents"].strip():
        raise DataError(path, line, "field 'contents' must be a non-empty string")


def _load_checked(path: str | Path, required: Sequence[str], check: Any) -> list[dict[str, Any]]:
    """Read, check each record, and refuse duplicate ids (they would corrupt joins by id)."""
    records: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for line_no, record in iter_jsonl(path, required):
        check(record, path, line_no)
        if record["id"] in first_line:
            raise DataError(path, line_no, f"duplicate id {record['id']!r} (first on line {first_line[record['id']]})",
                            "ids must be unique")
        first_line[record["id"]] = line_no
        records.append(record)
    return records


def load_qa(path: str | Path) -> list[dict[str, Any]]:
    """Load and validate a QA jsonl file; every record gets a ``metadata`` dict."""
    records = _load_checked(path, QA_FIELDS, check_qa_record)
    for record in records:
        record.setdefault("metadata", {})
        record["metadata"].setdefault("gold_passage_id", None)
    return records


def load_corpus(path: str | Path) -> list[dict[str, Any]]:
    """Load and validate a corpus jsonl file (an empty one is refused: every retriever would find nothing)."""
    passages = _load_checked(path, CORPUS_FIELDS, check_passage)
    _require_passages(path, len(passages))
    return passages


def validate_corpus_file(path: str | Path) -> int:
    """Check every line of a (possibly huge) corpus file without keeping it; return the passage count."""
    seen: set[str] = set()
    for line_no, record in iter_jsonl(path, CORPUS_FIELDS):
        check_passage(record, path, line_no)
        if record["id"] in seen:
            raise DataError(path, line_no, f"duplicate id {record['id']!r}", "ids must be unique")
        seen.add(record["id"])
    _require_passages(path, len(seen))
    return len(seen)


def _require_passages(path: str | Path, count: int) -> None:
    """An empty corpus would run every question closed-book while the run says it retrieved."""
    if count == 0:
        raise DataError(path, None, "corpus has no passages", "a corpus is a jsonl of {id, contents} passages")


def corpus_fingerprint(path: str | Path) -> str:
    """sha256 of the corpus file: the corpus part of every index cache key."""
    return sha256_file(path)


def cached_splits(directory: Path, splits: Iterable[str]) -> dict[str, Path] | None:
    """Return ``{split: directory/<split>.jsonl}`` if every split file exists, else None."""
    paths = {split: directory / f"{split}.jsonl" for split in splits}
    return paths if all(path.exists() for path in paths.values()) else None


def write_splits(directory: Path, splits: dict[str, list[dict[str, Any]]],
                 manifest: dict[str, Any]) -> dict[str, Path]:
    """Write each split's jsonl plus ``manifest.json`` as one atomic folder, so no split is ever half there."""
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        for split, records in splits.items():
            write_jsonl(tmp / f"{split}.jsonl", records)
        manifest = {**manifest, "counts": {split: len(records) for split, records in splits.items()}}
        write_json(tmp / "manifest.json", manifest)
    return {split: directory / f"{split}.jsonl" for split in splits}
