"""QA and corpus jsonl loading: schema checks that name the file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragforget.data.corpus import LocalJsonlCorpus
from ragforget.data.records import (
    corpus_fingerprint,
    dedupe_answers,
    load_corpus,
    load_qa,
    make_passage,
    make_qa_record,
    validate_corpus_file,
)
from ragforget.errors import ConfigError, DataError


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def qa_line(record_id: str = "q1", answers: object = ("Paris",)) -> str:
    answers = list(answers) if isinstance(answers, tuple) else answers
    return json.dumps({"id": record_id, "question": "Capital of France?", "golden_answers": answers})


def test_load_qa_fills_metadata(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [qa_line("q1"), "", qa_line("q2", ("Paris", "paris"))])
    records = load_qa(path)
    assert [r["id"] for r in records] == ["q1", "q2"]
    assert records[1]["golden_answers"] == ["Paris", "paris"]
    assert records[0]["metadata"] == {"gold_passage_id": None}


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [qa_line("q1"), qa_line("q2"), '{"id": "q3", "question": '])
    with pytest.raises(DataError) as info:
        load_qa(path)
    assert info.value.line == 3
    assert f"{path}:3" in str(info.value)


def test_missing_field_names_field_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [qa_line("q1"), json.dumps({"id": "q2", "question": "x?"})])
    with pytest.raises(DataError, match=r"qa.jsonl:2: missing field\(s\) \['golden_answers'\]"):
        load_qa(path)


@pytest.mark.parametrize("answers", [[], "Paris", ["Paris", 3], None])
def test_bad_golden_answers_rejected(tmp_path: Path, answers: object) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [qa_line("q1"), qa_line("q2"), qa_line("q3", answers)])
    with pytest.raises(DataError, match=r"qa.jsonl:3: field 'golden_answers' must be a non-empty list"):
        load_qa(path)


def test_duplicate_ids_rejected(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [qa_line("q1"), qa_line("q1")])
    with pytest.raises(DataError, match=r":2: duplicate id 'q1' \(first on line 1\)"):
        load_qa(path)


def test_make_records() -> None:
    assert dedupe_answers([" Paris ", "Paris", "", "Lyon"]) == ["Paris", "Lyon"]
    record = make_qa_record("a", " Who? ", ["X", "X "], {"title": "T"})
    assert record == {"id": "a", "question": "Who?", "golden_answers": ["X"],
                      "metadata": {"gold_passage_id": None, "title": "T"}}
    assert make_passage("p", "Title", " Body ") == {"id": "p", "contents": "Title\nBody", "title": "Title"}


def test_corpus_load_validate_and_fingerprint(tmp_path: Path) -> None:
    lines = [json.dumps(make_passage(f"p{i}", "T", f"text {i}")) for i in range(3)]
    path = write_lines(tmp_path / "corpus.jsonl", lines)
    assert [r["id"] for r in load_corpus(path)] == ["p0", "p1", "p2"]
    assert validate_corpus_file(path) == 3
    before = corpus_fingerprint(path)
    assert len(before) == 64
    write_lines(path, lines[:2])
    assert corpus_fingerprint(path) != before


def test_corpus_missing_contents(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "corpus.jsonl", [json.dumps({"id": "p0", "contents": "x"}),
                                                   json.dumps({"id": "p1", "text": "x"})])
    with pytest.raises(DataError, match=r"corpus.jsonl:2: missing field\(s\) \['contents'\]"):
        load_corpus(path)
    with pytest.raises(DataError, match=r"corpus.jsonl:2"):
        validate_corpus_file(path)


def test_local_corpus_validated_and_used_as_is(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "wiki.jsonl", [json.dumps({"id": "1", "contents": "A\nalpha"}),
                                                 json.dumps({"id": "2", "contents": "B\nbeta"})])
    corpus = LocalJsonlCorpus(str(path))
    assert corpus.materialize(tmp_path / "cache") == path.resolve()
    assert len(list((tmp_path / "cache" / "corpus" / "validated").iterdir())) == 1

    bad = write_lines(tmp_path / "bad.jsonl", [json.dumps({"id": "1", "contents": "A"}), "not json"])
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        LocalJsonlCorpus(str(bad)).materialize(tmp_path / "cache")
    with pytest.raises(ConfigError, match="dataset.corpus.path"):
        LocalJsonlCorpus(str(tmp_path / "absent.jsonl")).materialize(tmp_path / "cache")
