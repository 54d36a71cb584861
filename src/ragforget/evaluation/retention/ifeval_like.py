"""IFEval-style prompts: general requests with verifiable instructions, scored by lm-eval's checkers.

Google's IFEval prompts are on the Hub only, so we build prompts of the same shape offline: a
general request (template x topic) plus one or two instructions whose wording comes from lm-eval's
own ``build_description`` and whose compliance lm-eval's ``check_following`` decides. Only checkers
that need no downloaded NLTK data are used (number_sentences and capital_word_frequency need punkt),
and numeric constraints are kept small enough for a short generation budget.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import random
from collections.abc import Iterator
from types import ModuleType
from typing import Any

# General requests; {topic} is filled from TOPICS.
REQUEST_TEMPLATES: tuple[str, ...] = (
    "Write a short paragraph about {topic}.",
    "Explain {topic} to a high school student.",
    "Write a short blog post about {topic}.",
    "Describe why {topic} matters to ordinary people.",
    "Give some practical advice to someone who wants to learn about {topic}.",
    "Write a brief encyclopedia-style summary of {topic}.",
    "Write a short email to a friend telling them what you learned about {topic}.",
    "Write a short speech introducing {topic} to a general audience.",
    "Describe the main ideas behind {topic}.",
    "Write a short product description for a beginner's book about {topic}.",
)

TOPICS: tuple[str, ...] = (
    "photosynthesis", "the French Revolution", "volcanoes", "the water cycle", "the Roman Empire",
    "black holes", "the human heart", "climate change", "the printing press", "honey bees",
    "the Great Wall of China", "electric cars", "vaccines", "the Moon landing", "coral reefs",
    "the Internet", "jazz music", "the Amazon rainforest", "earthquakes", "the Olympic Games",
    "chess", "coffee", "the solar system", "dinosaurs", "the Renaissance", "recycling",
    "the immune system", "bicycles", "the stock market", "rainbows", "the ancient Egyptians",
    "penguins", "solar power", "the Industrial Revolution", "tea", "glaciers", "democracy",
    "the piano", "sleep", "volunteering", "the Pacific Ocean", "bread baking", "the telephone",
    "deserts", "friendship", "mountain climbing", "the Silk Road", "plate tectonics",
    "public libraries", "football", "photography", "the Eiffel Tower", "elephants",
    "wind energy", "the periodic table", "gardening", "the Cold War", "hurricanes", "whales",
    "the metric system", "computers", "the Mona Lisa", "yoga", "rivers", "the Vikings",
    "airplanes", "antibiotics", "the Sahara", "classical music", "the Arctic", "trains",
    "the human brain", "Shakespeare", "robots", "chocolate", "the Milky Way", "rice farming",
    "the Nile", "banking", "learning a second language", "wolves", "the Great Barrier Reef",
    "electricity", "museums", "the Aztecs", "running", "clouds", "newspapers", "cats",
    "the ozone layer", "origami", "the Himalayas", "space telescopes", "cheese making",
    "ancient Greece", "mathematics", "forests", "the United Nations", "video games", "ants",
)

KEYWORD_POOL: tuple[str, ...] = (
    "history", "future", "example", "important", "people", "world", "simple", "change",
    "nature", "science", "daily", "learn", "surprising", "community", "energy", "idea",
)
END_PHRASES: tuple[str, ...] = ("Any other questions?", "Is there anything else I can help with?")


def _spec(instruction_id: str, rng: random.Random, request: str) -> dict[str, Any]:
    """Seeded kwargs for one instruction (only checkers that work offline and in ~200 tokens)."""
    if instruction_id == "length_constraints:number_words":
        if rng.random() < 0.5:
            return {"relation": "less than", "num_words": rng.choice([40, 60, 80, 100])}
        return {"relation": "at least", "num_words": rng.choice([20, 30, 40, 50])}
    if instruction_id == "detectable_format:number_bullet_lists":
        return {"num_bullets": rng.randint(2, 4)}
    if instruction_id == "keywords:existence":
        return {"keywords": rng.sample(KEYWORD_POOL, 2)}
    if instruction_id == "keywords:forbidden_words":
        return {"forbidden_words": rng.sample(("the", "is", "and", "very", "also", "which"), 2)}
    if instruction_id == "keywords:frequency":
        return {"keyword": rng.choice(KEYWORD_POOL), "frequency": rng.randint(2, 3), "relation": "at least"}
    if instruction_id == "keywords:letter_frequency":
        return {"letter": rng.choice("bcdfgkmpqwxz"), "let_frequency": rng.randint(2, 4), "let_relation": "less than"}
    if instruction_id == "startend:end_checker":
        return {"end_phrase": rng.choice(END_PHRASES)}
    if instruction_id == "detectable_format:number_highlighted_sections":
        return {"num_highlights": rng.randint(1, 3)}
    if instruction_id == "detectable_content:postscript":
        return {"postscript_marker": rng.choice(("P.S.", "P.P.S"))}
    if instruction_id == "detectable_content:number_placeholders":
        return {"num_placeholders": rng.randint(1, 2)}
    if instruction_id == "length_constraints:number_paragraphs":
        return {"num_paragraphs": rng.randint(2, 3)}
    if instruction_id == "detectable_format:multiple_sections":
        return {"section_spliter": rng.choice(("Section", "SECTION")), "num_sections": rng.randint(2, 3)}
    if instruction_id == "combination:repeat_prompt":
        return {"prompt_to_repeat": request}
    return {}


INSTRUCTION_IDS: tuple[str, ...] = (
    "punctuation:no_comma",
    "change_case:english_lowercase",
    "change_case:english_capital",
    "length_constraints:number_words",
    "length_constraints:number_paragraphs",
    "detectable_format:number_bullet_lists",
    "detectable_format:title",
    "detectable_format:number_highlighted_sections",
    "detectable_format:multiple_sections",
    "detectable_format:json_format",
    "detectable_content:postscript",
    "detectable_content:number_placeholders",
    "keywords:existence",
    "keywords:forbidden_words",
    "keywords:frequency",
    "keywords:letter_frequency",
    "startend:end_checker",
    "startend:quotation",
    "combination:repeat_prompt",
)


@contextlib.contextmanager
def _no_nltk_download() -> Iterator[None]:
    """Keep lm-eval's ifeval import from trying to fetch punkt: none of our checkers needs it."""
    import nltk

    original = nltk.download
    nltk.download = lambda *args, **kwargs: False
    try:
        # lm-eval prints "Downloaded punkt_tab" whether or not it did.
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nltk.download = original


def ifeval_modules() -> tuple[ModuleType, ModuleType]:
    """lm-eval's (instructions_registry, utils) for IFEval, imported without network access."""
    import langdetect

    # langdetect is random unless seeded; the case checkers call it.
    langdetect.DetectorFactory.seed = 0
    with _no_nltk_download():
        registry = importlib.import_module("lm_eval.tasks.ifeval.instructions_registry")
        utils = importlib.import_module("lm_eval.tasks.ifeval.utils")
    return registry, utils


def describe(instruction_id: str, kwargs: dict[str, Any]) -> str:
    """The instruction sentence lm-eval's checker class writes for these kwargs."""
    registry, _ = ifeval_modules()
    checker = registry.INSTRUCTION_DICT[instruction_id](instruction_id)
    return checker.build_description(**kwargs)


def build_prompts(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` seeded IFEval-format records {key, prompt, instruction_id_list, kwargs}."""
    registry, _ = ifeval_modules()
    rng = random.Random(seed)
    records = []
    for key in range(n):
        request = rng.choice(REQUEST_TEMPLATES).format(topic=rng.choice(TOPICS))
        chosen: list[str] = []
        for _ in range(1 if rng.random() < 0.6 else 2):
            allowed = [i for i in INSTRUCTION_IDS if i not in chosen and not any(
                i in registry.INSTRUCTION_CONFLICTS[c] or c in registry.INSTRUCTION_CONFLICTS[i] for c in chosen)]
            if allowed:
                chosen.append(rng.choice(allowed))
        kwargs = [_spec(i, rng, request) for i in chosen]
        sentences = [describe(i, k) for i, k in zip(chosen, kwargs, strict=True)]
        # repeat_prompt's description already contains the request; IFEval puts it first.
        if "combination:repeat_prompt" in chosen:
            at = chosen.index("combination:repeat_prompt")
            prompt = " ".join([sentences[at]] + [s for j, s in enumerate(sentences) if j != at])
        else:
            prompt = " ".join([request] + sentences)
        records.append({"key": key, "prompt": prompt, "instruction_id_list": chosen, "kwargs": kwargs})
    return records


def score_response(record: dict[str, Any], response: str) -> dict[str, Any]:
    """lm-eval's IFEval process_results on one record/response (strict and loose)."""
    _, utils = ifeval_modules()
    return utils.process_results(record, [response])


# An instruction-blind answer: what a model that ignores every instruction would write.
BLIND_RESPONSE = (
    "This is an interesting subject with a long history. Many people have studied it, and it has "
    "shaped the way we live, work and learn today. Experts continue to debate its importance."
)


def blind_baseline(records: list[dict[str, Any]]) -> dict[str, float]:
    """Scores of BLIND_RESPONSE on every record: the 'chance' level of instruction following."""
    results = [score_response(r, BLIND_RESPONSE) for r in records]
    inst = [x for r in results for x in r["inst_level_strict_acc"]]
    return {
        "prompt_level_strict_acc": sum(r["prompt_level_strict_acc"] for r in results) / len(results),
        "inst_level_strict_acc": sum(inst) / len(inst),
    }
