"""SDFT data transform: the keep rule, the distillation prompt, the rewrite cache, the real model path."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import compose_config
from omegaconf import OmegaConf

from ragforget.data.rag_examples import TrainingExample
from ragforget.errors import ConfigError
from ragforget.methods.base import MethodContext
from ragforget.methods.build import build_method
from ragforget.methods.sdft import SelfDistill
from ragforget.models.generation import Generation
from ragforget.models.loading import load_tokenizer

SYSTEM = "Answer the question based on the given documents."


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path: str) -> Any:
    return load_tokenizer(tiny_model_path)


@functools.cache
def _config_settings() -> dict[str, Any]:
    node = OmegaConf.to_container(compose_config(["method=sdft"]).method.transforms.sdft, resolve=True)
    assert isinstance(node, dict)
    return {key: value for key, value in node.items() if key != "_target_"}


def distill(**overrides: Any) -> SelfDistill:
    """A SelfDistill with conf/method/sdft.yaml's settings (their one home), ``overrides`` on top."""
    return SelfDistill(**{**_config_settings(), **overrides})


def context(tmp_path: Path, tokenizer: Any, model_path: str = "unused",
            chat_template: bool = True) -> MethodContext:
    return MethodContext(model_path=model_path, tokenizer=tokenizer, chat_template=chat_template,
                         dtype="float32", cache_dir=tmp_path / "cache", seed=0, model_key={"model": "tiny"})


def rag(id_: str, question: str, golds: list[str]) -> TrainingExample:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Question: {question}"}]
    return TrainingExample(id=id_, messages=messages, plain_text=f"{SYSTEM}\n\nQuestion: {question}\nAnswer:",
                           target=golds[0], golden_answers=golds)


def general() -> TrainingExample:
    return TrainingExample(id="g0", messages=[{"role": "user", "content": "Write a haiku."}],
                           plain_text="Write a haiku.", target="Autumn moonlight...", source="general")


def examples() -> list[TrainingExample]:
    return [
        rag("q0", "Capital of France?", ["Paris"]),
        general(),
        rag("q1", "Who wrote Hamlet?", ["Shakespeare", "William Shakespeare"]),
        rag("q2", "Tallest tower in Paris?", ["The Eiffel Tower"]),
        rag("q3", "Largest planet?", ["Jupiter"]),
    ]


class FakeGenerator:
    """Returns canned rewrites in order (a plain string is one that ended by itself) and records what it was asked."""

    def __init__(self, outputs: Sequence[str | Generation]) -> None:
        self.outputs = [o if isinstance(o, Generation) else Generation(o, finished=True) for o in outputs]
        self.calls: list[Sequence[list[int]]] = []

    def __call__(self, prompts: Sequence[list[int]], ctx: MethodContext) -> list[Generation]:
        self.calls.append(prompts)
        return self.outputs[: len(prompts)]


# One rewrite per RAG example (q0..q3; the general example is never sent).
REWRITES = [
    "The capital of France is Paris.",                 # contains the gold -> kept
    "Hamlet was written by Marlowe.",                  # no gold answer -> original
    "Per the Reference answer, it is the eiffel tower.",  # gold under SQuAD normalization, but says "Reference"
    "It is JUPITER!",                                  # case and punctuation normalized away -> kept
]


def test_keep_rule_by_hand(tmp_path: Path, tokenizer: Any) -> None:
    fake = FakeGenerator(REWRITES)
    ctx = context(tmp_path, tokenizer)
    out = distill(generator=fake)(examples(), ctx)

    assert [ex.id for ex in out] == ["q0", "g0", "q1", "q2", "q3"]
    assert [ex.target for ex in out] == [
        "The capital of France is Paris.", "Autumn moonlight...", "Shakespeare", "The Eiffel Tower",
        "It is JUPITER!",
    ]
    assert out[1] == general()  # general data passes through untouched
    assert len(fake.calls) == 1 and len(fake.calls[0]) == 4  # only the 4 RAG examples are rewritten
    # kept: q0 and q3 of the 4 RAG examples -> 2 / 4
    assert ctx.metrics["sdft/kept_fraction"] == pytest.approx(0.5)
    assert ctx.metrics["sdft/cache_hit"] == 0.0


def test_a_rewrite_cut_at_max_new_tokens_is_a_failed_rewrite(tmp_path: Path, tokenizer: Any) -> None:
    """A rewrite that hit max_new_tokens keeps the original target, even if it contains the gold answer
    (training on it would append an end-of-turn to half a sentence); the flag survives the cache."""
    rewrites = [Generation("The capital of France is Paris, a city that", finished=False),  # gold, but cut
                Generation("Hamlet was written by Shakespeare.", finished=True),          # kept
                Generation("It is the Eiffel Tower, which", finished=False),              # gold, but cut
                "It is JUPITER!"]                                                         # kept
    ctx = context(tmp_path, tokenizer)
    out = distill(generator=FakeGenerator(rewrites))(examples(), ctx)
    assert [ex.target for ex in out] == ["Paris", "Autumn moonlight...", "Hamlet was written by Shakespeare.",
                                         "The Eiffel Tower", "It is JUPITER!"]
    assert ctx.metrics["sdft/kept_fraction"] == 0.5 and ctx.metrics["sdft/cut_fraction"] == 0.5

    again = context(tmp_path, tokenizer)
    assert distill(generator=FakeGenerator(["never used"] * 4))(examples(), again) == out
    assert again.metrics["sdft/cache_hit"] == 1.0 and again.metrics["sdft/cut_fraction"] == 0.5


def test_banned_phrases_are_configurable(tmp_path: Path, tokenizer: Any) -> None:
    transform = distill(generator=FakeGenerator(REWRITES), banned=["PARIS."])
    out = transform(examples(), context(tmp_path, tokenizer))
    # "reference" is no longer banned, so q2 is kept; "paris." (any case) now is, so q0 keeps its original.
    assert out[3].target == "Per the Reference answer, it is the eiffel tower."
    assert out[0].target == "Paris"


def test_chat_prompt_appends_the_reference_to_the_user_turn(tmp_path: Path, tokenizer: Any) -> None:
    fake = FakeGenerator(REWRITES)
    distill(generator=fake)(examples(), context(tmp_path, tokenizer))
    text = tokenizer.decode(fake.calls[0][0])
    user = "Question: Capital of France?\n\nReference answer: Paris\n\n" \
           "Refer to the reference answer and write your own response."
    assert SYSTEM in text and user in text
    assert text.rstrip().endswith("assistant")  # the generation prompt: the model answers next


def test_plain_prompt_moves_the_answer_cue_after_the_reference(tmp_path: Path, tokenizer: Any) -> None:
    fake = FakeGenerator(REWRITES)
    distill(generator=fake)(examples(), context(tmp_path, tokenizer, chat_template=False))
    text = tokenizer.decode(fake.calls[0][0])
    assert text == (f"{SYSTEM}\n\nQuestion: Capital of France?\n\nReference answer: Paris\n\n"
                    "Refer to the reference answer and write your own response.\nAnswer:")


def test_cache_hit_skips_generation(tmp_path: Path, tokenizer: Any) -> None:
    first = distill(generator=FakeGenerator(REWRITES))(examples(), context(tmp_path, tokenizer))
    again = FakeGenerator(["never used"] * 4)
    ctx = context(tmp_path, tokenizer)
    second = distill(generator=again)(examples(), ctx)
    assert again.calls == []
    assert second == first
    assert ctx.metrics["sdft/cache_hit"] == 1.0 and ctx.metrics["sdft/rewrite_s"] == 0.0
    assert ctx.metrics["sdft/kept_fraction"] == pytest.approx(0.5)


@pytest.mark.parametrize("change", [
    {"template": "{request}\nHint: {reference}"},
    {"max_new_tokens": 7},
])
def test_cache_key_changes_with_prompt_and_generation_settings(tmp_path: Path, tokenizer: Any,
                                                               change: dict[str, Any]) -> None:
    distill(generator=FakeGenerator(REWRITES))(examples(), context(tmp_path, tokenizer))
    again = FakeGenerator(REWRITES)
    distill(generator=again, **change)(examples(), context(tmp_path, tokenizer))
    assert len(again.calls) == 1


def test_cache_key_changes_with_the_targets(tmp_path: Path, tokenizer: Any) -> None:
    distill(generator=FakeGenerator(REWRITES))(examples(), context(tmp_path, tokenizer))
    changed = examples()
    changed[0].target = "Paris, France"
    again = FakeGenerator(REWRITES)
    distill(generator=again)(changed, context(tmp_path, tokenizer))
    assert len(again.calls) == 1


def test_only_general_data_is_returned_as_is(tmp_path: Path, tokenizer: Any) -> None:
    fake = FakeGenerator([])
    ctx = context(tmp_path, tokenizer)
    assert distill(generator=fake)([general()], ctx) == [general()]
    assert fake.calls == [] and ctx.metrics["sdft/kept_fraction"] == 0.0


@pytest.mark.parametrize("kwargs, key", [
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"batch_size": -1}, "batch_size"),
    ({"template": "{request} only"}, "template"),
    ({"template": "{request} {reference} {extra}"}, "template"),
    ({"template": "{request} {reference"}, "template"),
    ({"banned": ["reference", " "]}, "banned"),
    ({"device": "gpu0"}, "device"),
])
def test_bad_settings_name_their_key(kwargs: dict[str, Any], key: str) -> None:
    """Its own parameters are relative keys (the config test below adds the node); device is the global key."""
    with pytest.raises(ConfigError) as error:
        distill(**kwargs)
    assert error.value.key == key and error.value.relative == (key != "device")


def test_bad_settings_in_the_config_name_the_full_key() -> None:
    with pytest.raises(ConfigError) as error:
        build_method(compose_config(["method=sdft", "method.transforms.sdft.template='{reference} only'"]).method)
    assert error.value.key == "method.transforms.sdft.template"


def test_config_builds_the_transform_with_the_paper_template() -> None:
    method = build_method(compose_config(["method=sdft"]).method)
    transform = method.transforms["sdft"]
    assert isinstance(transform, SelfDistill)
    # The SDFT repo's distillation prompt ("alpaca_distill_refer") around the user turn.
    assert transform.template == ("{request}\n\nReference answer: {reference}\n\n"
                                  "Refer to the reference answer and write your own response.")
    assert (transform.max_new_tokens, transform.batch_size) == (48, 16)
    assert transform.banned == ["reference", "your own response", "your response", "my response", "your turn"]


def test_real_rewrite_on_the_tiny_model(tmp_path: Path, tokenizer: Any, tiny_model_path: str) -> None:
    data = [ex for ex in examples() if ex.golden_answers][:3]
    ctx = context(tmp_path, tokenizer, model_path=tiny_model_path)
    transform = distill(max_new_tokens=4, batch_size=2, device="cpu")
    out = transform(data, ctx)

    assert [ex.id for ex in out] == [ex.id for ex in data]
    for before, after in zip(data, out):
        assert after.target == before.target or transform.keeps(after.target, before)
    cached = [json.loads(line) for line in
              (transform.cache_folder(data, ctx) / "rewrites.jsonl").read_text().splitlines()]
    assert len(cached) == 3
    for record, before, after in zip(cached, data, out):  # 4 new tokens: most rewrites are cut
        assert record["finished"] or after.target == before.target
    assert ctx.metrics["sdft/cut_fraction"] == pytest.approx(sum(not r["finished"] for r in cached) / 3)
    assert ctx.metrics["sdft/cache_hit"] == 0.0 and ctx.metrics["sdft/rewrite_s"] > 0
