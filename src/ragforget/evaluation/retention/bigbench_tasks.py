"""Turn BIG-bench JSON tasks into flat multiple-choice / cloze records for lm-eval.

Prompts follow BIG-bench's own JSON-task formatting (task_prefix, example_input_prefix,
example_output_prefix, choices appended to the input when the task asks for it), so scores are
comparable with BIG-bench's zero-shot multiple_choice_grade.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ragforget.errors import DataError

# BIG-bench's defaults for JSON tasks (bigbench/api/json_task.py).
DEFAULT_INPUT_PREFIX = "\nQ: "
DEFAULT_OUTPUT_PREFIX = "\nA: "
DEFAULT_CHOICE_PREFIX = "\n  choice: "

MEMBER_ROOT = "bigbench/benchmark_tasks"

# Retention task name -> BIG-bench task files (subtasks are pooled; hhh_alignment has four).
MC_SOURCES: dict[str, tuple[str, ...]] = {
    "truthful_qa_mc1": ("truthful_qa/task_mc.json",),
    "social_iqa": ("social_iqa/task.json",),
    "strategyqa": ("strategyqa/task.json",),
    "general_knowledge": ("general_knowledge/task.json",),
    "hhh_alignment": tuple(f"hhh_alignment/{s}/task.json" for s in ("harmless", "helpful", "honest", "other")),
    "winowhy": ("winowhy/task.json",),
    "misconceptions": ("misconceptions/task.json",),
    "date_understanding": ("date_understanding/task.json",),
    "logical_deduction_3": ("logical_deduction/three_objects/task.json",),
    "navigate": ("navigate/task.json",),
}
CLOZE_SOURCES: dict[str, tuple[str, ...]] = {"qa_wikidata": ("qa_wikidata/task.json",)}


def member_path(relative: str) -> str:
    """Path of a BIG-bench task file inside the sdist (without the ``bigbench-1.0.0/`` root)."""
    return f"{MEMBER_ROOT}/{relative}"


def format_prompt(task: dict[str, Any], text: str, choices: Sequence[str]) -> str:
    """Render one example the way BIG-bench does for zero-shot scoring."""
    prompt = task.get("example_input_prefix", DEFAULT_INPUT_PREFIX) + text
    if task.get("append_choices_to_input", True) and choices:
        choice_prefix = task.get("choice_prefix", DEFAULT_CHOICE_PREFIX)
        prompt += "".join(choice_prefix + c for c in choices)
    prompt = task.get("task_prefix", "") + prompt + task.get("example_output_prefix", DEFAULT_OUTPUT_PREFIX)
    return prompt.lstrip()


def mc_records(task: dict[str, Any], source: str, seed: int) -> list[dict[str, Any]]:
    """Flatten a ``target_scores`` task into {id, query, choices, gold (list of indices)} records.

    Choice order is shuffled with a per-example seeded RNG: several BIG-bench files list the
    correct choice first, which matters when choices are appended to the prompt.
    """
    records = []
    for index, example in enumerate(task.get("examples", [])):
        scores = example.get("target_scores")
        if not isinstance(scores, dict) or len(scores) < 2:
            raise DataError(source, None, f"example {index} has no target_scores with two or more choices")
        choices = list(scores)
        random.Random(f"{seed}:{source}:{index}").shuffle(choices)
        gold = [i for i, c in enumerate(choices) if scores[c] > 0]
        if not gold:
            raise DataError(source, None, f"example {index} has no choice with a positive score")
        # Always a list (general_knowledge has an example with two right answers): lm-eval then
        # counts a prediction as correct when it is any of them.
        records.append({
            "id": f"{source}#{index}",
            "query": format_prompt(task, example["input"], choices),
            "choices": choices,
            "gold": gold,
        })
    return records


def cloze_records(task: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """Flatten a ``target`` (answer list) task into {id, query, answers} cloze records."""
    records = []
    for index, example in enumerate(task.get("examples", [])):
        target = example.get("target")
        answers = [target] if isinstance(target, str) else list(target or [])
        if not answers:
            raise DataError(source, None, f"example {index} has no target")
        records.append({"id": f"{source}#{index}", "query": example["input"].strip(), "answers": answers})
    return records


def chance_level(records: Sequence[dict[str, Any]]) -> float:
    """Expected accuracy of a uniform random pick: mean over examples of (#gold / #choices)."""
    if not records:
        raise ValueError("chance level of an empty task is undefined")
    total = 0.0
    for record in records:
        gold = record["gold"]
        total += (len(gold) if isinstance(gold, list) else 1) / len(record["choices"])
    return total / len(records)

