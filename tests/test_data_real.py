"""The real packaged corpus and SQuAD splits, built from the cached archives (about 5 s).

Derived files go to a temporary cache; the archives are read from the user cache's downloads/ and the
test is skipped (not failed) when they were never fetched, since fetching means a 358 MB download.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ragforget.assets.cache import resolve_cache_dir
from ragforget.assets.registry import BIGBENCH, WIKI_SUMMARIES
from ragforget.data.corpus import PackagedWikiCorpus, read_heldout_summaries
from ragforget.data.records import load_corpus, load_qa
from ragforget.data.squad import SquadOpen, SquadShiftsWikiOpen


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    downloads = resolve_cache_dir() / "downloads"
    missing = [s.filename for s in (BIGBENCH, WIKI_SUMMARIES) if not (downloads / s.filename).exists()]
    if missing:
        pytest.skip(f"archives {missing} not in {downloads}: run the prepare stage first")
    root = tmp_path_factory.mktemp("cache")
    (root / "downloads").symlink_to(downloads)
    return root


def test_real_corpus_and_squad_counts(cache: Path) -> None:
    corpus = PackagedWikiCorpus()
    passages = load_corpus(corpus.materialize(cache))
    prefixes = Counter(p["id"].rsplit("-", 2)[0] if not p["id"].startswith("wiki-") else "wiki" for p in passages)
    assert prefixes == {"squad-dev": 2067, "newwiki": 1581, "wiki": 10033 - 300}
    heldout = read_heldout_summaries(corpus.heldout_summaries_path(cache))
    ids = {p["id"] for p in passages}
    assert len(heldout) == 300 and not {s["id"] for s in heldout} & ids

    splits = {name: load_qa(path) for name, path in SquadOpen().materialize(cache).items()}
    assert {name: len(records) for name, records in splits.items()} == {"train": 8196, "validation": 747,
                                                                        "test": 1622}
    assert sum(len(records) for records in splits.values()) == 10565
    articles = [{r["metadata"]["article"] for r in records} for records in splits.values()]
    assert [len(a) for a in articles] == [34, 4, 10]
    assert not (articles[0] & articles[1] or articles[0] & articles[2] or articles[1] & articles[2])
    assert all(r["metadata"]["gold_passage_id"] in ids for records in splits.values() for r in records)

    shifts = load_qa(SquadShiftsWikiOpen().materialize(cache)["test"])
    assert len(shifts) == 7936
    assert all(r["metadata"]["gold_passage_id"] in ids for r in shifts)
