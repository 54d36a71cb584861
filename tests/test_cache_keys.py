"""Cache keys cover the content and versions that determine a cached result: change one, get a miss."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import compose_config

import ragforget.utils.hashing as hashing
from ragforget.data.rag_examples import RagExample
from ragforget.evaluation.base_cache import base_eval_key
from ragforget.evaluation.retention.suites import OfflineSuite
from ragforget.prepare import PreparedAssets
from ragforget.utils.io import write_jsonl

RETENTION_ITEMS = [{"id": "s1", "title": "Paris", "text": "Paris is the capital of France."},
                   {"id": "s2", "title": "Rome", "text": "Rome is the capital of Italy."}]


def _assets(tmp_path: Path, items: list[dict[str, str]] = RETENTION_ITEMS) -> PreparedAssets:
    """Assets with a retention suite of ``items``; every call shares one model folder, written once."""
    suite = OfflineSuite(tasks=["wiki_ppl"], limit=2, seed=0)
    suite.task_dir = tmp_path / f"suite-{len(list(tmp_path.glob('suite-*')))}"
    write_jsonl(suite.task_dir / "wiki_ppl" / "data.jsonl", items)
    model = tmp_path / "model"
    if not model.exists():
        model.mkdir()
        (model / "model.safetensors").write_bytes(b"weights")
    return PreparedAssets(cache_dir=tmp_path, model_path=str(model), splits={}, corpus_path=tmp_path / "corpus.jsonl",
                          heldout_summaries=None, retention=suite, shift_prompts=[])


def _examples(answer: str = "Paris", passage: str = "Paris is the capital of France.",
              question: str = "What is the capital of France?") -> list[RagExample]:
    messages = [{"role": "user", "content": f"Passage: {passage}\nQuestion: {question}"}]
    return [RagExample(id="q1", messages=messages, plain_text=messages[0]["content"], golden_answers=[answer],
                       doc_ids=["p1"])]


@pytest.fixture
def reference(tmp_path: Path) -> str:
    return base_eval_key(compose_config(), _examples(), _assets(tmp_path))


CHANGES = {
    "one answer": lambda tmp: (compose_config(), _examples(answer="Lyon"), _assets(tmp)),
    "one passage": lambda tmp: (compose_config(), _examples(passage="Paris is a city in France."), _assets(tmp)),
    "the question text": lambda tmp: (compose_config(), _examples(question="Capital of France?"), _assets(tmp)),
    "one retention item": lambda tmp: (compose_config(), _examples(),
                                       _assets(tmp, [RETENTION_ITEMS[0], {**RETENTION_ITEMS[1], "text": "Rome."}])),
    "an eval setting": lambda tmp: (compose_config(["eval.odqa.max_new_tokens=7"]), _examples(), _assets(tmp)),
    "the prompt": lambda tmp: (compose_config(["prompt.max_passage_tokens=9"]), _examples(), _assets(tmp)),
    "the model": lambda tmp: (compose_config(["model=tiny_random"]), _examples(), _assets(tmp)),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_base_evaluation_misses_when_its_input_changes(change: str, tmp_path: Path, reference: str) -> None:
    assert base_eval_key(*CHANGES[change](tmp_path)) != reference


def test_base_evaluation_is_shared_across_training_settings(tmp_path: Path, reference: str) -> None:
    """Seeds, methods and LoRA settings change what is trained, not the starting model's numbers."""
    cfg = compose_config(["seed=3", "method=selfaug", "model.lora.r=4", "train.lr=1e-4",
                          "eval.during_training.every_n_steps=5", "eval.paired.resamples=500"])
    assert base_eval_key(cfg, _examples(), _assets(tmp_path)) == reference


def test_base_evaluation_misses_when_the_weights_are_rewritten(tmp_path: Path, reference: str) -> None:
    assets = _assets(tmp_path)
    (Path(assets.model_path) / "model.safetensors").write_bytes(b"other weights")
    assert base_eval_key(compose_config(), _examples(), assets) != reference


@pytest.mark.parametrize("library", ["torch", "transformers", "lm_eval"])
def test_base_evaluation_misses_under_another_library_version(library: str, tmp_path: Path, reference: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real = hashing.version
    monkeypatch.setattr(hashing, "version", lambda name: "0.0-other" if name == library else real(name))
    assert base_eval_key(compose_config(), _examples(), _assets(tmp_path)) != reference


def test_source_fingerprint_follows_the_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "keyed_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "compute.py").write_text("SCALE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = hashing.source_fingerprint("keyed_pkg")
    (package / "compute.py").write_text("SCALE = 2\n")
    assert hashing.source_fingerprint("keyed_pkg") != before
