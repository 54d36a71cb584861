"""The retention suite end to end on the tiny random model: YAMLs, lm-eval loading, metric keys."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from ragforget.assets.cache import resolve_cache_dir
from ragforget.errors import ConfigError
from ragforget.evaluation.retention import (
    DEFAULT_TASKS,
    TASK_NAMES,
    evaluate_retention,
    general_prompts,
    prepare_retention_suite,
)
from ragforget.utils.io import write_jsonl

LIMIT = 3


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "heldout_summaries.jsonl"
    texts = ["Tea is an aromatic beverage prepared by pouring hot water over cured leaves.",
             "The Nile is a major north-flowing river in northeastern Africa.",
             "Chess is a board game for two players, played on a checkered board."]
    write_jsonl(path, [{"id": f"w{i}", "title": t.split()[1], "text": t} for i, t in enumerate(texts)])
    return path


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, heldout: Path) -> Path:
    downloads = resolve_cache_dir() / "downloads"
    if not (downloads / "bigbench-1.0.0.tar.gz").exists():
        pytest.skip("the bigbench sdist is not in the cache (run the prepare step once)")
    cache = tmp_path_factory.mktemp("cache")
    (cache / "downloads").symlink_to(downloads)
    return prepare_retention_suite(TASK_NAMES, LIMIT, 0, cache, heldout)


def test_yamls_use_absolute_data_paths(suite: Path) -> None:
    for name in TASK_NAMES:
        config = yaml.load((suite / name / f"{name}.yaml").read_text(), Loader=yaml.BaseLoader)
        data = Path(config["dataset_kwargs"]["data_files"]["test"])
        assert data.is_absolute() and data.exists() and data.parent == suite / name


def test_prepare_is_cached_and_checks_names(suite: Path, heldout: Path) -> None:
    again = prepare_retention_suite(TASK_NAMES, LIMIT, 0, suite.parents[1], heldout)
    assert again == suite
    with pytest.raises(ConfigError, match="unknown task"):
        prepare_retention_suite(["mmlu"], LIMIT, 0, suite.parents[1], heldout)
    assert set(DEFAULT_TASKS) <= set(TASK_NAMES)


def test_tasks_load_in_lm_eval(suite: Path) -> None:
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(suite), include_defaults=False)
    loaded = manager.load(["truthful_qa_mc1", "ifeval_like", "wiki_ppl", "qa_wikidata__gold_nll"])
    assert set(loaded["tasks"]) == {"truthful_qa_mc1", "ifeval_like", "wiki_ppl", "qa_wikidata__gold_nll"}
    for task in loaded["tasks"].values():
        assert len(list(task.test_docs())) == LIMIT


def test_general_prompts_interleave_sources(suite: Path) -> None:
    prompts = general_prompts(suite, n=4)
    assert len(prompts) == 4
    assert prompts[1].startswith("Tea is") and prompts[3].startswith("The Nile")


def test_evaluate_retention_on_tiny_model(suite: Path, tiny_model_path: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    result = evaluate_retention(model, tokenizer, suite, TASK_NAMES, batch_size=4, out_dir=tmp_path,
                                max_gen_toks=8, limit=2)
    expected = {"truthful_qa_mc1/acc", "truthful_qa_mc1/gold_logprob", "truthful_qa_mc1/gold_choice_prob",
                "hhh_alignment/acc_stderr", "hhh_alignment/acc_norm", "qa_wikidata/exact_match", "qa_wikidata/gold_nll",
                "gsm8k/exact_match", "gsm8k/gold_nll", "ifeval_like/prompt_level_strict_acc",
                "ifeval_like/inst_level_loose_acc", "ifeval_like/mean_words", "wiki_ppl/word_perplexity",
                "wiki_ppl/bits_per_byte"}
    assert expected <= set(result.metrics)
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert set(result.primary) == set(TASK_NAMES) == set(result.chance)
    assert 0.0 < result.primary["wiki_ppl"] <= 1.0
    # Item by item, every task's parts add up to its primary score (what paired deltas resample).
    assert set(result.items) == set(TASK_NAMES)
    for task, scores in result.items.items():
        assert len(scores.ids) == 2 and scores.score() == pytest.approx(result.primary[task], rel=1e-9), task
    # "auto": generation tasks (and gsm8k's gold-answer companion) under the chat template.
    chat = {t for t, on in result.raw["chat_template"].items() if on}
    assert chat == {"ifeval_like", "gsm8k", "gsm8k__gold_nll"}
    assert (tmp_path / "retention_results.json").exists()
    assert (tmp_path / "samples" / "ifeval_like.jsonl").exists()


def test_generation_and_scoring_run_at_their_own_batch_sizes(suite: Path, tiny_model_path: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring batches hold [rows, tokens, vocab] logits and are capped apart from generation's."""
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen: dict[str, set[int]] = {"generate_until": set(), "loglikelihood": set(), "loglikelihood_rolling": set()}
    for kind in seen:
        original = getattr(HFLM, kind)

        def spy(self: HFLM, *args: object, _kind: str = kind, _original: object = original, **kwargs: object) -> object:
            seen[_kind].add(int(self.batch_size))
            return _original(self, *args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(HFLM, kind, spy)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    evaluate_retention(model, tokenizer, suite, ["qa_wikidata", "wiki_ppl"], batch_size=4, scoring_batch_size=1,
                       max_gen_toks=4, limit=2)
    assert seen == {"generate_until": {4}, "loglikelihood": {1}, "loglikelihood_rolling": {1}}
