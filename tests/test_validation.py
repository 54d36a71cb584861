"""Bad settings and bad data files fail before any work, with an error naming the key (or file and line).

Every shipped config (each option test_configs composes, and each value of the ready sweeps) passes.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import CONF_DIR, compose_config
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from test_configs import REQUIRED_OVERRIDES, SWEEPS, _options, hydra_composed

from ragforget.data.corpus import LocalJsonlCorpus
from ragforget.data.records import load_corpus, load_qa
from ragforget.errors import ConfigError, DataError
from ragforget.pipeline import Job, prepare
from ragforget.validation import validate_config


@functools.cache
def _composed(groups: tuple[str, ...]) -> DictConfig:
    return compose_config(list(groups))


def configured(overrides: Sequence[str]) -> DictConfig:
    """``compose_config(overrides)``, composing each choice of config groups once (composing takes ~0.1 s).

    Group choices (``method=selfaug``) go through Hydra's compose; value overrides are parsed as Hydra
    parses them (``abc`` a string, ``nan`` a float, ``[]`` a list) and set on a copy, as Hydra sets them
    after composing.
    """
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    is_group = [(Path(CONF_DIR) / o.key_or_group).is_dir() for o in parsed]
    cfg = copy.deepcopy(_composed(tuple(o.input_line for o, group in zip(parsed, is_group) if group)))
    for override, group in zip(parsed, is_group):
        if not group:
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
    return cfg


# Evaluation-only datasets (train_split null) cannot train: they ship for method=base or stage=evaluate, and
# with the default method=sft validate_config refuses them (a case of BAD_SETTINGS).
EVAL_ONLY = {"dataset=popqa", "dataset=squadshifts_wiki_open"}


@dataclass(frozen=True)
class Bad:
    """A bad setting: the overrides, the key the error must name, and text of the bad value it must show."""

    overrides: tuple[str, ...]
    key: str
    shows: str
    sweeping: bool = False


def bad(*overrides: str, key: str, shows: str, sweeping: bool = False) -> Any:
    return pytest.param(Bad(overrides, key, shows, sweeping), id=" ".join(overrides))


BAD_SETTINGS = [
    # training
    bad("train.lr=abc", key="train.lr", shows="'abc'"),
    bad("train.lr=0", key="train.lr", shows="got 0"),
    bad("train.lr=-0.001", key="train.lr", shows="-0.001"),
    bad("train.lr=nan", key="train.lr", shows="nan"),
    bad("train.batch_size=0", key="train.batch_size", shows="got 0"),
    bad("train.batch_size=2.5", key="train.batch_size", shows="2.5"),
    bad("train.weight_decay=-0.1", key="train.weight_decay", shows="-0.1"),
    bad("train.warmup_ratio=1.0", key="train.warmup_ratio", shows="1.0"),
    bad("train.max_examples=0", key="train.max_examples", shows="got 0"),
    bad("train.max_length=1", key="train.max_length", shows="got 1"),
    bad("train.checkpoint_every_n_steps=0", key="train.checkpoint_every_n_steps", shows="got 0"),
    bad("train.loss_chunk_rows=0", key="train.loss_chunk_rows", shows="got 0"),
    bad("trainer.max_steps=0", key="trainer.max_steps", shows="got 0"),
    bad("trainer.max_steps=-1", "trainer.max_epochs=-1", key="trainer.max_steps", shows="never stop"),
    bad("trainer.accumulate_grad_batches=0", key="trainer.accumulate_grad_batches", shows="got 0"),
    bad("model.lora.r=0", key="model.lora.r", shows="got 0"),
    bad("seed=abc", key="seed", shows="'abc'"),
    # retrieval
    bad("retriever.top_k=-1", key="retriever.top_k", shows="-1"),
    bad("retriever.top_k=0", key="retriever.top_k", shows="got 0"),
    bad("retriever=dense", "retriever.top_k=2.5", key="retriever.top_k", shows="2.5"),
    bad("retriever=none", "retriever.top_k=-1", key="retriever.top_k", shows="-1"),
    bad("retriever=invar", "retriever.impl.stage1.max_steps=0", key="retriever.impl.stage1.max_steps",
        shows="got 0"),
    # evaluation
    bad("eval.odqa.max_questions=0", key="eval.odqa.max_questions", shows="got 0"),
    bad("eval.odqa.max_questions=-5", key="eval.odqa.max_questions", shows="-5"),
    bad("eval.odqa.max_new_tokens=0", key="eval.odqa.max_new_tokens", shows="got 0"),
    bad("eval.odqa.seed=1.5", key="eval.odqa.seed", shows="1.5"),
    bad("eval.shift.num_texts=0", key="eval.shift.num_texts", shows="got 0"),
    bad("eval.retention.limit=0", key="eval.retention.limit", shows="got 0"),
    bad("eval.retention.scoring_batch_size=fast", key="eval.retention.scoring_batch_size", shows="'fast'"),
    bad("eval.retention.tasks=[mmlu_typo]", key="eval.retention.tasks", shows="mmlu_typo"),
    bad("eval.retention.tasks=[]", key="eval.retention.tasks", shows="retention/macro_avg", sweeping=True),
    # the sweep objective
    bad("objective.weights=[1.0]", key="objective.weights", shows="[1.0]"),
    bad("objective.weights=[1.0,high]", key="objective.weights", shows="'high'"),
    bad("objective.metrics=[]", "objective.weights=[]", key="objective.metrics", shows="empty", sweeping=True),
    # stages, checkpoints, resuming
    bad("stage=train", key="stage", shows="'train'"),
    bad("stage=evaluate", key="checkpoint", shows="got none"),
    bad("stage=evaluate", "checkpoint={missing}", key="checkpoint", shows="does not exist"),
    bad("stage=evaluate", "checkpoint={empty}", key="checkpoint", shows="config.yaml"),
    bad("resume_dir={empty}", key="resume_dir", shows="config.yaml"),
    # datasets
    bad("dataset.eval_split=dev", key="dataset.eval_split", shows="'validation'"),
    bad("dataset.train_split=dev", key="dataset.train_split", shows="'dev'"),
    bad("dataset=squadshifts_wiki_open", key="dataset.train_split", shows="method=sft"),
    bad("dataset=nq_open", key="dataset.corpus.path", shows="???"),
    bad("retriever=invar", "dataset=popqa", "dataset.corpus.path=/x.jsonl", "method=base", key="dataset.train_split",
        shows="retriever adapter"),
    # methods
    bad("method=selfaug", "method.terms.selfaug.weight=-0.1", key="method.terms.selfaug.weight", shows="-0.1"),
    bad("method=selfaug", "method.terms.selfaug.weight=abc", key="method.terms.selfaug.weight", shows="'abc'"),
    bad("method=output_kl", "method.terms.output_kl.weight=-1", key="method.terms.output_kl.weight", shows="-1"),
    bad("method=l2sp", "method.terms.l2sp.weight=abc", key="method.terms.l2sp.weight", shows="'abc'"),
    bad("method=ewc", "method.terms.ewc.weight=-1", key="method.terms.ewc.weight", shows="-1"),
    bad("method=ewc", "method.terms.ewc.num_samples=0", key="method.terms.ewc.num_samples", shows="got 0"),
    bad("method=orthogonal", "method.terms.orthogonal.weight=abc", key="method.terms.orthogonal.weight", shows="'abc'"),
    bad("method=replay", "method.transforms.replay.ratio=1.5", key="method.transforms.replay.ratio", shows="1.5"),
    bad("method=self_synth", "method.transforms.self_synth.ratio=-0.1", key="method.transforms.self_synth.ratio",
        shows="-0.1"),
    bad("method=mofo", "method.optimizer.fraction=0", key="method.optimizer.fraction", shows="got 0"),
    bad("method=wise_ft", "method.posthoc.weights=[0.5,1.5]", key="method.posthoc.weights", shows="1.5"),
    bad("method=wise_ft", "method.posthoc.weights=[]", key="method.posthoc.weights", shows="[]"),
    bad("method=sdft", "method.transforms.sdft.max_new_tokens=0", key="method.transforms.sdft.max_new_tokens",
        shows="got 0"),
    bad("method=self_synth", "method.transforms.self_synth.source.oversample=abc",
        key="method.transforms.self_synth.source.oversample", shows="'abc'"),
    bad("method=self_synth", "train.max_examples=null", key="method.transforms.self_synth.source.instructions.count",
        shows="ceil_product got null"),
    # where inference runs
    bad("device=gpu", key="device", shows="'gpu'"),
]


@pytest.mark.parametrize("case", BAD_SETTINGS)
def test_bad_setting_is_refused(case: Bad, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    cfg = configured([override.format(**paths) for override in case.overrides])
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, sweeping=case.sweeping)
    assert info.value.key == case.key
    assert f"config key '{case.key}'" in str(info.value) and case.shows in str(info.value)


def test_empty_retention_is_allowed_outside_a_sweep() -> None:
    validate_config(configured(["eval.retention.tasks=[]"]), sweeping=False)
    validate_config(configured(["eval.retention.tasks=[]", "objective.metrics=[odqa/acc]",
                                    "objective.weights=[1.0]"]), sweeping=True)


def test_good_edge_values_pass(tmp_path: Path) -> None:
    """Values at the edge of each rule are settings, not mistakes (and a real checkpoint folder passes)."""
    checkpoint = tmp_path / "checkpoint"
    (checkpoint / "tokenizer").mkdir(parents=True)
    OmegaConf.save(compose_config(), checkpoint / "config.yaml")
    for overrides in (["train.max_examples=null", "eval.odqa.max_questions=null", "train.warmup_ratio=0",
                       "trainer.max_steps=-1", "trainer.max_epochs=2", "train.max_length=32", "device=cpu"],
                      ["retriever=none"], ["method=selfaug", "method.terms.selfaug.weight=0"],
                      ["stage=evaluate", f"checkpoint={checkpoint}"], [f"resume_dir={checkpoint}"],
                      ["dataset.eval_split=validation"], ["dataset=popqa", "dataset.corpus.path=/x.jsonl",
                                                          "method=base"]):
        validate_config(configured(overrides), sweeping=False)


def shipped_options() -> list[list[str]]:
    """Each option test_configs composes, with its mandatory values (eval-only datasets with method=base)."""
    return [[option, *REQUIRED_OVERRIDES.get(option, []), *(["method=base"] if option in EVAL_ONLY else [])]
            for option in _options()]


def test_every_shipped_config_passes() -> None:
    for overrides in [*shipped_options(), ["method=sft_full"], ["experiment=lora_rank", "model.lora.r=64"],
                      ["trainer=gpu"], ["method=[selfaug,replay]", "method.name=selfaug+replay"]]:
        validate_config(configured(overrides), sweeping=True)  # the stricter mode: it adds the objective checks


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_every_job_of_the_ready_sweeps_passes(name: str) -> None:
    params = hydra_composed(f"experiment={name}").hydra.sweeper.params
    grid = [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()
            if key != "seed"]
    for job in itertools.product(*grid):
        validate_config(configured([f"experiment={name}", *job]), sweeping=True)


# ---- data files: DataError naming the file and the line, before any model is loaded ----

def qa_line(record_id: str = "q1", **fields: Any) -> str:
    return json.dumps({"id": record_id, "question": "Capital of France?", "golden_answers": ["Paris"], **fields})


def passage_line(passage_id: str) -> str:
    return json.dumps({"id": passage_id, "contents": f"Title\ntext of {passage_id}"})


def without_answers(record_id: str) -> str:
    return json.dumps({"id": record_id, "question": "Capital of France?"})


BAD_FILES = [
    pytest.param(load_qa, [qa_line("q1"), '{"id": "q2", "question": '], 2, "not valid JSON", id="qa-not-json"),
    pytest.param(load_qa, [qa_line("q1"), qa_line("q2", golden_answers=[])], 2, "golden_answers", id="qa-no-answer"),
    pytest.param(load_qa, [qa_line("q1"), without_answers("q2")], 2, "golden_answers", id="qa-answers-missing"),
    pytest.param(load_corpus, [passage_line("p1"), "p2 plain text"], 2, "not valid JSON", id="corpus-not-json"),
    pytest.param(load_corpus, [""], None, "no passages", id="corpus-empty"),
    pytest.param(lambda path: LocalJsonlCorpus(str(path)).materialize(path.parent / "cache"), [""], None,
                 "no passages", id="local-corpus-empty"),
]


@pytest.mark.parametrize(("reader", "lines", "line", "problem"), BAD_FILES)
def test_bad_data_file_names_file_and_line(reader: Any, lines: list[str], line: int | None, problem: str,
                                           tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        reader(path)
    assert info.value.line == line and info.value.path == str(path)
    assert str(info.value).startswith(f"{path}:{line}:" if line else f"{path}:") and problem in str(info.value)


def test_top_k_larger_than_the_corpus_is_refused(tmp_path: Path) -> None:
    """Checked as soon as the corpus is read, before a retriever is built (or trained) or a model loads."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(passage_line(f"p{i}") for i in range(2)) + "\n", encoding="utf-8")
    overrides = ["model=tiny_random", "dataset.corpus._target_=ragforget.data.corpus.LocalJsonlCorpus",
                 f"+dataset.corpus.path={corpus}", f"paths.output_dir={tmp_path}"]
    prepare(Job.for_config(compose_config([*overrides, "retriever.top_k=2"]), tmp_path), None)
    with pytest.raises(ConfigError) as info:
        prepare(Job.for_config(compose_config([*overrides, "retriever.top_k=3"]), tmp_path), None)
    assert info.value.key == "retriever.top_k" and "only 2 passage(s)" in str(info.value)
