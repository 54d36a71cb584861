"""Hub QA sets (NQ-open, TriviaQA, PopQA) mapped into the QA schema, via load_dataset on local files
shaped exactly like each hub dataset, composed from the real conf/dataset files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ragforget.env import apply_defaults

apply_defaults()  # before anything imports datasets

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from ragforget.data.hub import HubQA, map_rows, parse_answers, select_rows  # noqa: E402
from ragforget.data.records import load_qa  # noqa: E402
from ragforget.errors import AssetError, ConfigError, DataError  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"

NQ_ROWS = [
    {"question": "when was the last time anyone was on the moon", "answer": ["14 December 1972 UTC", "December 1972"]},
    {"question": "who wrote he ain't heavy he's my brother lyrics", "answer": ["Bobby Scott", "Bob Russell"]},
    {"question": "how many episodes in season 2 breaking bad", "answer": ["13"]},
]
TRIVIA_ROWS = [
    {"question": "Which Lloyd Webber musical premiered in the US on 10th December 1993?", "question_id": "tc_33",
     "question_source": "http://www.triviacountry.com/",
     "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
     "search_results": {"description": [], "filename": [], "rank": [], "title": [], "url": [], "search_context": []},
     "answer": {"aliases": ["Sunset Blvd", "Sunset Boulevard", "Sunset Boulevard"], "normalized_aliases":
                ["sunset blvd", "sunset boulevard"], "matched_wiki_entity_name": "",
                "normalized_matched_wiki_entity_name": "", "normalized_value": "sunset boulevard",
                "type": "WikipediaEntity", "value": "Sunset Boulevard"}},
    {"question": "Who was the man behind The Chipmunks?", "question_id": "tc_40", "question_source": "",
     "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
     "search_results": {"description": [], "filename": [], "rank": [], "title": [], "url": [], "search_context": []},
     "answer": {"aliases": ["David Seville"], "normalized_aliases": ["david seville"],
                "matched_wiki_entity_name": "", "normalized_matched_wiki_entity_name": "",
                "normalized_value": "david seville", "type": "WikipediaEntity", "value": "David Seville"}},
]
POPQA_ROWS = [
    {"id": 4222362, "subj": "George Rankin", "prop": "occupation", "obj": "politician", "subj_id": 1850297,
     "prop_id": 22, "obj_id": 2834605, "s_aliases": '["George James Rankin"]',
     "o_aliases": '["political leader", "political figure"]', "s_uri": "http://www.wikidata.org/entity/Q5543720",
     "o_uri": "http://www.wikidata.org/entity/Q82955", "s_wiki_title": "George Rankin", "o_wiki_title": "Politician",
     "s_pop": 142, "o_pop": 25692, "question": "What is George Rankin's occupation?",
     "possible_answers": '["politician", "political leader", "political figure", "polit."]'},
    {"id": 6054, "subj": "Saturn", "prop": "genre", "obj": "science fiction", "subj_id": 1, "prop_id": 2,
     "obj_id": 3, "s_aliases": "[]", "o_aliases": '["sci-fi"]', "s_uri": "", "o_uri": "", "s_wiki_title": "Saturn",
     "o_wiki_title": "Science fiction", "s_pop": 2480, "o_pop": 100, "question": "What genre is Saturn?",
     "possible_answers": '["science fiction", "sci-fi", "SF"]'},
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def compose_dataset(name: str, overrides: list[str]) -> Any:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(overrides=[f"+dataset={name}", *overrides]).dataset


def test_nq_open_shape(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "nq_train.jsonl", NQ_ROWS)
    dev = write_jsonl(tmp_path / "nq_dev.jsonl", NQ_ROWS[:2])
    cfg = compose_dataset("nq_open", ["dataset.qa.path=json",
                                      f"dataset.qa.data_files={{train: '{train}', validation: '{dev}'}}"])
    assert (cfg.train_split, cfg.eval_split) == ("train", "test")
    paths = instantiate(cfg.qa).materialize(tmp_path / "cache")
    assert set(paths) == {"train", "test"}
    test = load_qa(paths["test"])
    assert [r["id"] for r in test] == ["nq_open-test-0", "nq_open-test-1"]
    assert test[0]["golden_answers"] == ["14 December 1972 UTC", "December 1972"]
    assert test[0]["metadata"] == {"gold_passage_id": None, "row": 0}
    assert len(load_qa(paths["train"])) == 3


def test_triviaqa_shape(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "trivia_train.jsonl", TRIVIA_ROWS[1:])
    dev = write_jsonl(tmp_path / "trivia_dev.jsonl", TRIVIA_ROWS)
    cfg = compose_dataset("triviaqa", ["dataset.qa.path=json",
                                       f"dataset.qa.data_files={{train: '{train}', validation: '{dev}'}}"])
    paths = instantiate(cfg.qa).materialize(tmp_path / "cache")
    assert [r["id"] for r in load_qa(paths["train"])] == ["triviaqa-train-tc_40"]
    test = load_qa(paths["test"])
    assert test[0]["id"] == "triviaqa-test-tc_33"
    assert test[0]["golden_answers"] == ["Sunset Boulevard", "Sunset Blvd"]
    assert test[1]["golden_answers"] == ["David Seville"]


def test_popqa_shape(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "popqa.jsonl", POPQA_ROWS)
    cfg = compose_dataset("popqa", ["dataset.qa.path=json", f"dataset.qa.data_files={{test: '{data}'}}"])
    assert cfg.train_split is None
    test = load_qa(instantiate(cfg.qa).materialize(tmp_path / "cache")["test"])
    assert test[0]["id"] == "popqa-test-4222362"
    assert test[0]["golden_answers"] == ["politician", "political leader", "political figure", "polit."]
    assert test[0]["metadata"] == {"gold_passage_id": None, "row": 0, "s_pop": 142, "prop": "occupation"}


def test_missing_field_names_field_and_alternatives(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "popqa.jsonl", POPQA_ROWS)
    qa = HubQA("popqa", "json", {"test": "test"}, answers_field="answers", data_files={"test": data})
    with pytest.raises(ConfigError, match=r"dataset.qa.answers_field.*'answers' not in json:test.*possible_answers"):
        qa.materialize(tmp_path / "cache")


def test_dict_answers_need_keys() -> None:
    answer = TRIVIA_ROWS[0]["answer"]
    with pytest.raises(ConfigError, match=r"dataset.qa.answer_keys.*normalized_aliases"):
        parse_answers(answer, None, "row 0")
    with pytest.raises(ConfigError, match=r"\['alias'\] not in the answer dict"):
        parse_answers(answer, ["alias"], "row 0")
    assert parse_answers(answer, ["normalized_aliases"], "row 0") == ["sunset blvd", "sunset boulevard"]


def test_parse_answer_shapes() -> None:
    assert parse_answers(["a", "b"], None, "r") == ["a", "b"]
    assert parse_answers('["a", "b"]', None, "r") == ["a", "b"]
    assert parse_answers("1972", None, "r") == ["1972"]
    with pytest.raises(DataError, match="do not parse"):
        parse_answers('["a", ', None, "r")
    with pytest.raises(DataError, match="must be a string"):
        parse_answers(3, None, "r")


def test_max_size_is_a_seeded_sample_with_stable_ids() -> None:
    keep = select_rows(100, 10, seed=0)
    assert keep == sorted(keep) and len(set(keep)) == 10 and keep == select_rows(100, 10, seed=0)
    assert keep != select_rows(100, 10, seed=1)
    assert select_rows(5, 10, seed=0) == [0, 1, 2, 3, 4]
    qa = HubQA("nq", "json", {"test": "validation"}, max_size={"test": 2}, seed=0)
    records = qa.build({"test": NQ_ROWS})["test"]
    expected = select_rows(3, 2, 0)
    assert [r["id"] for r in records] == [f"nq-test-{i}" for i in expected]
    assert [r["question"] for r in records] == [NQ_ROWS[i]["question"] for i in expected]


def test_rows_without_answers_are_dropped() -> None:
    rows = [{"question": "q0", "answer": []}, {"question": "q1", "answer": ["x"]}]
    records = map_rows(rows, prefix="p", question_field="question", answers_field="answer", answer_keys=None,
                       id_field=None, metadata_fields=(), source="s")
    assert [r["id"] for r in records] == ["p-1"]


def test_cache_key_follows_local_file_content(tmp_path: Path) -> None:
    data = tmp_path / "nq.jsonl"
    write_jsonl(data, NQ_ROWS)
    qa = HubQA("nq", "json", {"test": "train"}, data_files=str(data))
    first = qa.materialize(tmp_path / "cache")["test"]
    write_jsonl(data, NQ_ROWS[:1])
    second = qa.materialize(tmp_path / "cache")["test"]
    assert first.parent != second.parent
    assert len(load_qa(second)) == 1


def test_hub_id_offline_raises_asset_error(tmp_path: Path) -> None:
    cfg = compose_dataset("nq_open", [])
    with pytest.raises(AssetError, match="google-research-datasets/nq_open.*dataset.qa.data_files"):
        instantiate(cfg.qa).materialize(tmp_path / "cache")
