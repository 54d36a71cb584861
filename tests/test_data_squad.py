"""SQuAD-format sources -> corpus passages, open-domain QA records and article-level splits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragforget.data import corpus as corpus_mod
from ragforget.data import squad as squad_mod
from ragforget.data.corpus import PackagedWikiCorpus, build_packaged_corpus, read_heldout_summaries, select_heldout
from ragforget.data.records import load_corpus, load_qa
from ragforget.data.squad import (
    SquadOpen,
    SquadShiftsWikiOpen,
    article_title,
    split_by_article,
    squad_passages,
    squad_questions,
)
from ragforget.errors import ConfigError

FRACTIONS = {"train": 0.6, "validation": 0.2, "test": 0.2}


def make_squad(n_articles: int, paragraphs: int = 2, questions: int = 2, tag: str = "a") -> dict[str, Any]:
    """A SQuAD-format dict whose every answer is a word of its own paragraph."""
    data = []
    for a in range(n_articles):
        paras = []
        for p in range(paragraphs):
            context = f"Article {tag}{a} paragraph {p} mentions answer{tag}{a}x{p} and more."
            qas = [{"id": f"{tag}-{a}-{p}-{q}", "question": f"What does {tag}{a} paragraph {p} mention ({q})?",
                    "answers": [{"text": f"answer{tag}{a}x{p}", "answer_start": context.index("answer")}] * 2}
                   for q in range(questions)]
            paras.append({"context": context, "qas": qas})
        data.append({"title": f"Title_{tag}{a}", "paragraphs": paras})
    return {"version": "1.1", "data": data}


def make_summaries(n: int) -> dict[str, dict[str, str]]:
    return {f"Topic {i}": {"title": f"Topic {i}", "extract": f"Topic {i} is summary number {i}.",
                           "description": "d", "topic": "t"} for i in range(n)}


def test_passages_and_questions_share_ids() -> None:
    squad = make_squad(3)
    passages = squad_passages(squad, "squad-dev")
    assert [p["id"] for p in passages][:3] == ["squad-dev-0-0", "squad-dev-0-1", "squad-dev-1-0"]
    assert passages[0]["contents"].startswith("Title a0\nArticle a0 paragraph 0")
    questions = squad_questions(squad, "squad-dev")
    assert len(questions) == 12
    first = questions[0]
    assert first["id"] == "a-0-0-0"
    assert first["golden_answers"] == ["answera0x0"]  # the repeated annotation is deduplicated
    assert first["metadata"] == {"gold_passage_id": "squad-dev-0-0", "title": "Title a0", "article": "squad-dev-0"}


def test_question_without_answer_in_paragraph_is_dropped() -> None:
    squad = make_squad(1, paragraphs=1, questions=2)
    squad["data"][0]["paragraphs"][0]["qas"][1]["answers"] = [{"text": "not there", "answer_start": 0}]
    assert [q["id"] for q in squad_questions(squad, "x")] == ["a-0-0-0"]


def test_article_title_unquotes() -> None:
    assert article_title("Marxism%E2%80%93Leninism") == "Marxism\u2013Leninism"
    assert article_title("Fresno,_California") == "Fresno, California"


def test_split_is_by_article_and_deterministic() -> None:
    records = squad_questions(make_squad(10), "squad-dev")
    splits = split_by_article(records, FRACTIONS, seed=0)
    articles = {name: {r["metadata"]["article"] for r in recs} for name, recs in splits.items()}
    assert [len(articles[s]) for s in ("train", "validation", "test")] == [6, 2, 2]
    assert not (articles["train"] & articles["validation"] or articles["train"] & articles["test"]
                or articles["validation"] & articles["test"])
    assert sum(len(recs) for recs in splits.values()) == len(records)
    assert split_by_article(records, FRACTIONS, seed=0) == splits
    other = split_by_article(records, FRACTIONS, seed=1)
    assert {r["metadata"]["article"] for r in other["test"]} != articles["test"]


@pytest.mark.parametrize("fractions", [{"train": 0.7, "test": 0.2}, {"train": 1.2, "test": -0.2}, {}])
def test_bad_fractions(fractions: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="dataset.qa.fractions"):
        split_by_article(squad_questions(make_squad(4), "x"), fractions, seed=0)


def test_split_with_no_article_is_refused() -> None:
    with pytest.raises(ConfigError, match="split 'validation' gets no article out of 3"):
        split_by_article(squad_questions(make_squad(3), "x"), {"train": 0.9, "validation": 0.05, "test": 0.05}, 0)


def test_gold_passages_exist_and_heldout_excluded() -> None:
    squad_dev, new_wiki, summaries = make_squad(5), make_squad(3, tag="n"), make_summaries(20)
    passages, heldout = build_packaged_corpus(squad_dev, new_wiki, summaries, heldout_summaries=4, seed=0)
    ids = [p["id"] for p in passages]
    assert len(ids) == len(set(ids)) == 10 + 6 + 16
    for record in SquadOpen(0, FRACTIONS).build(squad_dev)["test"] + SquadShiftsWikiOpen().build(new_wiki)["test"]:
        assert record["metadata"]["gold_passage_id"] in ids
    assert len(heldout) == 4
    corpus_text = {p["contents"] for p in passages}
    for summary in heldout:
        assert summary["id"] not in ids
        assert f"{summary['title']}\n{summary['text']}" not in corpus_text
    assert select_heldout(20, 4, 0) == {int(s["id"].split("-")[1]) for s in heldout}
    assert select_heldout(20, 4, 0) != select_heldout(20, 4, 1)


def test_heldout_count_out_of_range() -> None:
    with pytest.raises(ConfigError, match="dataset.corpus.heldout_summaries"):
        build_packaged_corpus(make_squad(1), make_squad(1), make_summaries(5), heldout_summaries=5, seed=0)


@pytest.fixture()
def fake_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Point the fetchers at tiny files so materialize runs without the 358 MB archive."""
    raw = tmp_path / "raw"
    raw.mkdir()
    files = {"squad-dev": raw / "dev.json", "newwiki": raw / "new.json"}
    files["squad-dev"].write_text(json.dumps(make_squad(10)))
    files["newwiki"].write_text(json.dumps(make_squad(4, tag="n")))
    summaries = raw / "summaries.json"
    summaries.write_text(json.dumps(make_summaries(30)))
    calls = {"fetch": 0}

    def fetch_squad_files(cache_dir: Path) -> dict[str, Path]:
        calls["fetch"] += 1
        return files

    monkeypatch.setattr(squad_mod, "fetch_squad_files", fetch_squad_files)
    monkeypatch.setattr(corpus_mod, "fetch_squad_files", fetch_squad_files)
    monkeypatch.setattr(corpus_mod, "fetch_raw", lambda cache_dir, spec, members: {members[0]: summaries})
    return calls


def test_materialize_caches_by_split_parameters(tmp_path: Path, fake_sources: dict[str, int]) -> None:
    cache = tmp_path / "cache"
    paths = SquadOpen(0, FRACTIONS).materialize(cache)
    assert set(paths) == {"train", "validation", "test"}
    assert paths["train"].parent.name.startswith("squad_open-")
    assert sum(len(load_qa(p)) for p in paths.values()) == 40
    assert SquadOpen(0, FRACTIONS).materialize(cache) == paths
    assert fake_sources["fetch"] == 1  # the second call read the cache
    reseeded = SquadOpen(1, FRACTIONS).materialize(cache)
    assert reseeded["train"].parent != paths["train"].parent
    manifest = json.loads((paths["train"].parent / "manifest.json").read_text())
    assert manifest["counts"] == {s: len(load_qa(p)) for s, p in paths.items()}


def test_materialize_corpus_and_heldout(tmp_path: Path, fake_sources: dict[str, int]) -> None:
    cache = tmp_path / "cache"
    corpus = PackagedWikiCorpus(heldout_summaries=5, seed=0)
    path = corpus.materialize(cache)
    assert path.name == "corpus.jsonl" and path.parent.parent == cache / "corpus"
    passages = load_corpus(path)
    assert len(passages) == 20 + 8 + 25
    heldout = read_heldout_summaries(corpus.heldout_summaries_path(cache))
    assert len(heldout) == 5
    assert not {s["id"] for s in heldout} & {p["id"] for p in passages}
    gold = {q["metadata"]["gold_passage_id"] for q in load_qa(SquadShiftsWikiOpen().materialize(cache)["test"])}
    assert gold <= {p["id"] for p in passages}
    assert PackagedWikiCorpus(heldout_summaries=6).materialize(cache).parent != path.parent
