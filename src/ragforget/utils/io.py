"""File helpers: jsonl that names the bad line, atomic writes that never leave half a file, cache locks."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ragforget.errors import DataError
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


def iter_jsonl(path: str | Path, required: Sequence[str] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream ``(line number, record)``; a malformed line or missing field names file and line.

    Streaming keeps memory flat when validating a user corpus of millions of passages, and the line
    numbers let callers' own field checks point at the offending line.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found")
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, line_no, f"not valid JSON ({exc.msg} at column {exc.colno})",
                                "fix or delete the line") from None
            if not isinstance(record, dict):
                raise DataError(path, line_no, "each line must be a JSON object")
            missing = [field for field in required if field not in record]
            if missing:
                raise DataError(path, line_no, f"missing field(s) {missing}",
                                f"every record needs {list(required)}")
            yield line_no, record


def read_jsonl(path: str | Path, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read a whole jsonl file (see :func:`iter_jsonl` for the checks)."""
    return [record for _, record in iter_jsonl(path, required)]


# A temporary sibling of a path being written: ".<name>.<8 random chars>.tmp" (see _owned_temp_dir).
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``path`` only if the block succeeds.

    Works for files and directories alike, so a crash never leaves a half-written artifact where
    a later run would mistake it for a finished one. A file replaces the old one atomically. A
    directory is published once: if another job published ``path`` first (parallel jobs building
    the same cache entry), that one wins and ours is discarded, because the other job or a reader
    may be using it. While the block runs, this process holds a lock on the temporary folder, so
    :func:`remove_stale_temps` can tell a killed writer's leftovers from a live writer's work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, owner = _owned_temp_dir(path)
    target = tmp / path.name
    try:
        yield target
        try:
            os.replace(target, path)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not path.is_dir():
                raise
            log.info("%s was published by another job first; keeping that one", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(owner)


def _owned_temp_dir(path: Path) -> tuple[Path, int]:
    """A fresh temporary folder beside ``path``, locked by this process (the lock dies with it).

    The folder gets its ``.tmp`` name only once locked, so a sweeper never sees it unlocked.
    """
    fresh = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent))
    owner = os.open(fresh, os.O_RDONLY)
    fcntl.flock(owner, fcntl.LOCK_EX)
    tmp = fresh.with_suffix(".tmp")
    fresh.rename(tmp)
    return tmp, owner


def remove_stale_temps(root: str | Path) -> list[Path]:
    """Delete the temporary folders under ``root`` whose writer is gone (killed mid-write).

    A live writer holds a lock on its folder (:func:`atomic_path`); a killed one's lock went with
    its process, so the folder can be locked here and is garbage. Returns what was removed.
    """
    removed: list[Path] = []
    for folder, subfolders, _ in os.walk(root):
        for name in [n for n in subfolders if TEMP_NAME.match(n)]:
            subfolders.remove(name)  # never descend into a temporary folder
            candidate = Path(folder) / name
            try:
                handle = os.open(candidate, os.O_RDONLY)
            except OSError:  # its writer finished meanwhile
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer
            else:
                shutil.rmtree(candidate, ignore_errors=True)
                removed.append(candidate)
            finally:
                os.close(handle)
    if removed:
        log.info("removed %d temporary folder(s) left by killed processes under %s", len(removed), root)
    return removed


@contextlib.contextmanager
def cache_lock(path: str | Path) -> Iterator[None]:
    """Hold the lock of the cache entry ``path`` (any process, any job of a sweep) for the block.

    Check for the entry and build it inside the block: the first job builds it, the others wait
    and then find it built. The lock file (``.<name>.lock`` beside the entry) stays; it is empty.
    Locks nest from an entry to what it is built from (a corpus, then its packages), never back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path.parent / f".{path.name}.lock", is_singleton=True)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        log.info("waiting for another job that is building %s", path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write records as jsonl atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Write one JSON document atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return path


def read_json(path: str | Path) -> Any:
    """Read one JSON document, naming the file on failure."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, f"not valid JSON ({exc.msg})") from None
