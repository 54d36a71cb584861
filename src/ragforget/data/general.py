"""General instruction data (replay, EWC's Fisher, reconstructed data): one normalized format.

Every source writes a JSON-lines file of single-turn conversations into the cache::

    {"id": "...", "prompt": "the user's request", "response": "the assistant's answer"}

and training reads it back as ``TrainingExample``s with ``source="general"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ragforget.data.rag_examples import TrainingExample
from ragforget.errors import DataError
from ragforget.utils.io import iter_jsonl

GENERAL_FIELDS = ("id", "prompt", "response")
PLAIN_RESPONSE_CUE = "\nResponse:"  # for models without a chat template, like RagPrompt's "Answer:"


class GeneralDataSource(Protocol):
    """Anything that can write the normalized general-data file into the cache."""

    def materialize(self, cache_dir: Path) -> Path: ...


def read_general(path: Path) -> list[dict[str, Any]]:
    """The normalized rows of ``path``; a row missing a field or with an empty one is a DataError."""
    rows = []
    for line, row in iter_jsonl(path, required=GENERAL_FIELDS):
        for key in GENERAL_FIELDS:
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(path, line, f"field '{key}' is missing or empty",
                                "general data rows need non-empty id, prompt and response strings")
        rows.append(row)
    return rows


def general_training_examples(rows: Sequence[dict[str, Any]]) -> list[TrainingExample]:
    """One user turn and its response per row, trained like a RAG answer (labels on the response)."""
    return [TrainingExample(id=f"general:{row['id']}", messages=[{"role": "user", "content": row["prompt"]}],
                            plain_text=row["prompt"] + PLAIN_RESPONSE_CUE, target=row["response"],
                            source="general")
            for row in rows]
