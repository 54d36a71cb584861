"""Append-only JSON-lines journals: long generation passes that survive being killed.

A pass is a list of work items cut into fixed batches. Each finished batch is appended to the
journal in one write and flushed, so a kill loses at most the batch in flight (and perhaps leaves
a torn last line, which the next run cuts off). A rerun skips the batches already journaled and
recomputes the rest with the same per-batch seed, so its result equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from ragforget.errors import DataError
from ragforget.utils.hashing import stable_hash
from ragforget.utils.io import cache_lock
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

Item = TypeVar("Item")
Record = dict[str, Any]


class Journal:
    """Records keyed by their ``key`` field, appended batch by batch to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Record]:
        """The complete records written so far; a torn last line (a kill mid-write) is cut off."""
        records: dict[str, Record] = {}
        if not self.path.exists():
            return records
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) < len(data):
            log.warning("%s: dropping a torn last line left by an interrupted run", self.path)
            with self.path.open("r+b") as handle:
                handle.truncate(len(complete))
        for line_no, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(self.path, line_no, f"not valid JSON ({exc.msg})",
                                "this is a cache file: delete it to start the pass over") from None
            records[record["key"]] = record
        return records

    def append(self, records: Sequence[Record]) -> None:
        """Add one batch's records in a single flushed write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())


def run_journaled(items: Sequence[Item], item_key: Callable[[Item], str], journal: Journal,
                  work: Callable[[Sequence[Item]], list[Record]], batch_size: int, seed: int, desc: str
                  ) -> list[Record]:
    """``work`` over ``items`` in fixed batches, resuming from ``journal``; records in item order.

    ``work`` returns one record per item, in order, each with ``key`` = ``item_key(item)``. Before each batch the torch
    RNG is seeded from (seed, journal file, batch index), so sampling in a recomputed batch
    repeats what the interrupted run would have drawn. Only records missing from the journal are
    appended, so nothing is duplicated.
    """
    with cache_lock(journal.path):  # one writer per journal: a parallel job waits, then finds it done
        return _run(items, item_key, journal, work, batch_size, seed, desc)


def _run(items: Sequence[Item], item_key: Callable[[Item], str], journal: Journal,
         work: Callable[[Sequence[Item]], list[Record]], batch_size: int, seed: int, desc: str) -> list[Record]:
    done = journal.load()
    batches = [items[start:start + batch_size] for start in range(0, len(items), batch_size)]
    todo = [i for i, batch in enumerate(batches) if any(item_key(item) not in done for item in batch)]
    if done:
        log.info("%s: resuming, %d of %d batch(es) already in %s", desc, len(batches) - len(todo),
                 len(batches), journal.path)
    for index in tqdm(todo, desc=desc, leave=False):
        torch.manual_seed(int(stable_hash([seed, journal.path.name, index]), 16))
        records = work(batches[index])
        if len(records) != len(batches[index]):
            raise RuntimeError(f"{desc}: work returned {len(records)} records for {len(batches[index])} items")
        new = [record for record in records if record["key"] not in done]
        journal.append(new)
        done.update((record["key"], record) for record in new)
    return [done[item_key(item)] for item in items]
