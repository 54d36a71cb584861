"""BIG-bench record building, chance levels and the IFEval-style prompts (no model needed)."""

from __future__ import annotations

import pytest

from ragforget.data.records import seeded_subset
from ragforget.evaluation.retention import bigbench_tasks as bb
from ragforget.evaluation.retention import ifeval_like
from ragforget.evaluation.retention.task_functions import (
    cloze_process_results,
    gsm8k_process_results,
    ifeval_process_results,
    perplexity_process_results,
)

TOY_TASK = {
    "task_prefix": "Answer the question.\n",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "append_choices_to_input": False,
    "examples": [
        {"input": "How many legs do horses have?", "target_scores": {"four": 1, "two": 0}},
        {"input": "Which is a colour?", "target_scores": {"red": 1, "chair": 0, "dog": 0, "run": 0}},
    ],
}


def test_chance_level_by_hand() -> None:
    records = bb.mc_records(TOY_TASK, "toy", seed=0)
    # (1/2 + 1/4) / 2
    assert bb.chance_level(records) == pytest.approx(0.375)
    two_right = [{"choices": ["a", "b", "c", "d"], "gold": [0, 2]}]
    assert bb.chance_level(two_right) == pytest.approx(0.5)


def test_mc_records_format_and_gold() -> None:
    records = bb.mc_records(TOY_TASK, "toy", seed=0)
    first = records[0]
    assert first["query"] == "Answer the question.\n\nQ: How many legs do horses have?\nA: "
    assert [first["choices"][i] for i in first["gold"]] == ["four"]
    assert [records[1]["choices"][i] for i in records[1]["gold"]] == ["red"]
    # Same seed, same shuffle; the shuffle is per example, not global.
    assert bb.mc_records(TOY_TASK, "toy", seed=0) == records


def test_choices_appended_like_bigbench() -> None:
    task = {**TOY_TASK, "append_choices_to_input": True, "task_prefix": ""}
    query = bb.mc_records(task, "toy", seed=1)[0]["query"]
    assert query.startswith("Q: How many legs do horses have?\n  choice: ")
    assert query.count("\n  choice: ") == 2 and query.endswith("\nA: ")


def test_seeded_subset_is_stable() -> None:
    records = [{"id": str(i)} for i in range(50)]
    a = seeded_subset(records, 10, seed=3)
    assert a == seeded_subset(records, 10, seed=3) and len(a) == 10
    assert a != seeded_subset(records, 10, seed=4)
    assert seeded_subset(records, None, seed=3) == records


def test_ifeval_checkers_accept_and_reject() -> None:
    record = {"key": 0, "prompt": "Write about tea. Use no commas and only lowercase letters.",
              "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
              "kwargs": [{}, {}]}
    good = ifeval_process_results(record, ["tea is a drink made from leaves and hot water. people drink it every day."])
    bad = ifeval_process_results(record, ["Tea is a drink, made from leaves."])
    assert good["prompt_level_strict_acc"] is True and good["inst_level_strict_acc"] == [True, True]
    assert bad["prompt_level_strict_acc"] is False and bad["inst_level_strict_acc"] == [False, False]
    assert good["mean_words"] == 15


def test_ifeval_kwargs_are_valid_for_every_built_prompt() -> None:
    records = ifeval_like.build_prompts(200, seed=0)
    assert len({r["prompt"] for r in records}) > 150
    used = {i for r in records for i in r["instruction_id_list"]}
    assert used <= set(ifeval_like.INSTRUCTION_IDS) and len(used) >= 15
    for record in records:
        # lm-eval rebuilds each checker from the stored kwargs; a bad kwarg raises here.
        scores = ifeval_like.score_response(record, "some answer")
        assert len(scores["inst_level_loose_acc"]) == len(record["instruction_id_list"])
    assert ifeval_like.build_prompts(20, seed=0) == records[:20]


def test_number_words_instruction_round_trip() -> None:
    record = {"key": 1, "prompt": "p", "instruction_id_list": ["length_constraints:number_words"],
              "kwargs": [{"relation": "less than", "num_words": 5}]}
    assert ifeval_like.score_response(record, "one two three")["prompt_level_strict_acc"] is True
    assert ifeval_like.score_response(record, "one two three four five six")["prompt_level_strict_acc"] is False
    description = ifeval_like.describe("length_constraints:number_words", {"relation": "less than", "num_words": 5})
    assert "less than 5 words" in description


def test_generation_scorers() -> None:
    doc = {"answers": ["Paris", "City of Light"]}
    assert cloze_process_results(doc, [" Paris. It is big."]) == {"exact_match": 1.0}
    assert cloze_process_results(doc, [" the city of light\nmore"]) == {"exact_match": 1.0}
    assert cloze_process_results(doc, [" Lyon"]) == {"exact_match": 0.0}
    assert cloze_process_results({"answers": ["French"]}, [" French, but also English."]) == {"exact_match": 1.0}
    assert cloze_process_results({"answers": ["U.S. Army"]}, [" U.S. Army"]) == {"exact_match": 1.0}
    assert cloze_process_results(doc, [" Paris Hilton"]) == {"exact_match": 0.0}
    assert gsm8k_process_results({"answer_number": "1200"}, ["so 1,000 + 200 = 1,200."]) == {"exact_match": 1.0}
    assert gsm8k_process_results({"answer_number": "18"}, ["no number"]) == {"exact_match": 0.0}
    ppl = perplexity_process_results({"text": "two words"}, [-3.0])
    assert ppl["word_perplexity"] == (-3.0, 2) and ppl["bits_per_byte"] == (-3.0, 9)
