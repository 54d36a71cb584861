"""self_synth: instruction extraction, cleaning, score parsing, selection, journals and resume."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path
from typing import Any

import pytest
from synth_fakes import scripted_generate
from transformers import AutoTokenizer

from ragforget.errors import ConfigError, DataError
from ragforget.models.generation import Sampling, generate_batch
from ragforget.models.loading import load_model
from ragforget.synth.committee import Member
from ragforget.synth.instructions import clean_instructions, end_of_turn_ids, pre_query_ids, pre_query_prefix
from ragforget.synth.journal import Journal, run_journaled
from ragforget.synth.judging import Candidate, parse_score, select_best
from ragforget.synth.source import SynthesizedGeneralData
from ragforget.synth.synthesizer import (
    InstructionSettings,
    JudgeSettings,
    ResponseSettings,
    Synthesizer,
    trim_to_sentence,
)

SMOLLM2_PREFIX = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                  "<|im_end|>\n<|im_start|>user\n")
RUBRIC = "Score 1-5.\n{instruction}\n{response}"
# ChatML without a system turn, as in many fine-tuned models' templates.
NO_SYSTEM_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                      "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path: str) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_path)


# --- step 1: instructions ----------------------------------------------------------------------------

def test_pre_query_prefix_of_smollm2_keeps_its_default_system_prompt(tokenizer: Any) -> None:
    assert pre_query_prefix(tokenizer) == SMOLLM2_PREFIX
    assert end_of_turn_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert tokenizer.decode(pre_query_ids(tokenizer)) == SMOLLM2_PREFIX  # no extra bos or eos


def test_pre_query_prefix_of_a_template_without_system_prompt(tiny_model_path: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    tokenizer.chat_template = NO_SYSTEM_TEMPLATE
    assert pre_query_prefix(tokenizer) == "<|im_start|>user\n"
    assert end_of_turn_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_a_model_without_chat_template_is_refused_naming_the_key(tiny_model_path: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    tokenizer.chat_template = None
    with pytest.raises(ConfigError, match="'model.chat_template'"):  # the key the synthesizer names
        pre_query_prefix(tokenizer, "model.chat_template")


def test_cleaning_drops_empty_truncated_and_normalized_duplicates() -> None:
    samples = [
        {"text": "How do I bake bread?", "finished": True},
        {"text": "  ", "finished": True},                       # empty
        {"text": "?!", "finished": True},                       # empty once normalized
        {"text": "Write a poem about the", "finished": False},  # truncated
        {"text": "how do I bake  bread", "finished": True},     # duplicate (case, punctuation, spaces)
        {"text": "How do I bake a bread?", "finished": True},   # duplicate (article)
        {"text": "Name three rivers.", "finished": True},
    ]
    cleaned = clean_instructions(samples)
    assert cleaned.kept == ["How do I bake bread?", "Name three rivers."]
    dropped = (cleaned.dropped_empty, cleaned.dropped_truncated, cleaned.dropped_duplicate)
    assert cleaned.sampled == 7 and dropped == (2, 1, 2)
    assert cleaned.dedup_rate == pytest.approx(2 / 4)


# --- step 3: scores and selection --------------------------------------------------------------------

@pytest.mark.parametrize(("reply", "score", "status"), [
    (" 4", 4.0, "ok"), ("4/5", 4.0, "ok"), ("**5** - clear and helpful", 5.0, "ok"), ("Score: 3", 3.0, "ok"),
    (" 4.5 out of 5", 4.5, "ok"), ("1", 1.0, "ok"),
    ("10/10", None, "out_of_range"), (" 0", None, "out_of_range"), ("-2", None, "out_of_range"),
    ("great answer!", None, "unparseable"), ("", None, "unparseable"),
    ("1 to 5", None, "unparseable"), (" 1-5 scale", None, "unparseable"),  # the rubric's scale echoed
])
def test_parse_score(reply: str, score: float | None, status: str) -> None:
    parsed = parse_score(reply)
    assert (parsed.score, parsed.status) == (score, status)


def candidate(instruction: int, author: str, sample: int, scores: dict[str, float | None],
              finished: bool = True, text: str = "an answer") -> Candidate:
    return Candidate(instruction, author, sample, text, finished, scores=dict(scores))


def test_select_best_takes_the_highest_mean_and_drops_by_reason() -> None:
    candidates = [
        # instruction 0: b's 4.5 beats a's 4.0 (a's missing score is left out of its mean, not counted as 0)
        candidate(0, "a", 0, {"a": 4.0, "b": None}), candidate(0, "b", 0, {"a": 4.0, "b": 5.0}),
        # instruction 1: a tie at 3.5 goes to the earlier candidate; the truncated 5.0 is not eligible
        candidate(1, "a", 0, {"a": 3.0, "b": 4.0}), candidate(1, "a", 1, {"a": 4.0, "b": 3.0}),
        candidate(1, "b", 0, {"a": 5.0, "b": 5.0}, finished=False),
        # instruction 2: best mean 2.5 is under the threshold
        candidate(2, "a", 0, {"a": 2.0, "b": 3.0}),
        # instruction 3: no score parsed at all
        candidate(3, "a", 0, {"a": None, "b": None}),
        # instruction 4: only an empty response
        candidate(4, "a", 0, {}, text=" "),
    ]
    selection = select_best(candidates, n_instructions=5, judged=True, threshold=3.0)
    assert [(c.instruction, c.author, c.sample) for c in selection.chosen] == [(0, "b", 0), (1, "a", 0)]
    assert selection.chosen[0].mean_score == 4.5 and selection.chosen[1].mean_score == 3.5
    assert (selection.below_threshold, selection.unscored, selection.no_complete_response) == (1, 1, 1)


@pytest.mark.parametrize(("text", "trimmed"), [
    ("First sentence. Second one is cut", "First sentence."),
    ("Steps:\n1. Mix the flour\n2. Add wat", "Steps:\n1. Mix the flour"),
    ("Version 2.5 is out! And then", "Version 2.5 is out!"),
    ("no sentence end at all", ""),
])
def test_trim_to_sentence(text: str, trimmed: str) -> None:
    assert trim_to_sentence(text) == trimmed


def test_unjudged_selection_keeps_the_first_complete_candidate() -> None:
    candidates = [candidate(0, "a", 0, {}, finished=False), candidate(0, "a", 1, {}), candidate(0, "b", 0, {})]
    selection = select_best(candidates, n_instructions=1, judged=False, threshold=3.0)
    assert [(c.author, c.sample) for c in selection.chosen] == [("a", 1)]


# --- journals and resume -----------------------------------------------------------------------------

def test_journal_cuts_a_torn_last_line_and_keeps_complete_records(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    journal.append([{"key": "0", "text": "a"}, {"key": "1", "text": "b"}])
    with journal.path.open("a") as handle:
        handle.write('{"key": "2", "te')  # killed mid-write
    assert sorted(journal.load()) == ["0", "1"]
    assert journal.path.read_text().endswith('"b"}\n')  # the torn tail is gone, so appends stay valid


def test_run_journaled_skips_done_batches_and_reseeds_the_rest(tmp_path: Path) -> None:
    import torch

    calls: list[list[int]] = []

    def work(batch: list[int]) -> list[dict[str, Any]]:
        calls.append(list(batch))
        return [{"key": str(i), "draw": torch.rand(1).item()} for i in batch]

    full = run_journaled(list(range(5)), str, Journal(tmp_path / "a" / "j.jsonl"), work, 2, 0, "t")
    # An earlier run (same file name: batch seeds hash it) journaled only the first batch before it died.
    partial = Journal(tmp_path / "b" / "j.jsonl")
    partial.append(full[:2])
    calls.clear()
    resumed = run_journaled(list(range(5)), str, partial, work, 2, 0, "t")
    assert calls == [[2, 3], [4]]
    assert resumed == full
    assert len(partial.load()) == 5 and len(partial.path.read_text().splitlines()) == 5  # nothing twice


def member(path: str, name: str) -> Member:
    return Member(name, {"source": {"_target_": "ragforget.models.sources.HubModel", "name_or_path": path},
                         "dtype": "float32", "chat_template": True})


def synthesizer(path: str, generate: Any = scripted_generate, judged: bool = True) -> Synthesizer:
    return Synthesizer(
        instruction_model=member(path, "tiny"), committee=[member(path, "a"), member(path, "b")],
        instructions=InstructionSettings(count=10, temperature=1.0, top_p=0.98, max_new_tokens=8, batch_size=4),
        responses=ResponseSettings(per_model=2, temperature=0.7, top_p=0.9, max_new_tokens=8, batch_size=4,
                                   trim_truncated=True),
        judge=JudgeSettings(enabled=judged, threshold=3.0, rubric=RUBRIC, prefill="Score:",
                            max_new_tokens=4, batch_size=4),
        seed=0, device="cpu", generate=generate)


class Interrupted(Exception):
    pass


def interrupting(after_calls: int) -> Any:
    """scripted_generate that dies on its ``after_calls``-th call, like a killed process."""
    count = 0

    def generate(*args: Any) -> Any:
        nonlocal count
        count += 1
        if count == after_calls:
            raise Interrupted
        return scripted_generate(*args)

    return generate


def test_synthesis_writes_dataset_stats_and_plot(tmp_path: Path, tiny_model_path: str) -> None:
    folder = synthesizer(tiny_model_path).build(tmp_path)
    records = [json.loads(line) for line in (folder / "dataset.jsonl").read_text().splitlines()]
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["instructions_sampled"] == 10 and stats["candidates"] == 4 * stats["instructions_kept"]
    assert stats["scores"] == 2 * stats["candidates"]  # every member scored every (complete) candidate
    assert stats["scores_unparseable"] + stats["scores_out_of_range"] > 0  # the script emits both
    assert stats["rows"] == len(records) > 0
    assert stats["rows"] + stats["dropped_unscored"] + stats["dropped_below_threshold"] == stats["instructions_kept"]
    for record in records:
        assert set(record) == {"id", "instruction", "response", "model", "sample", "score", "scores"}
        assert record["model"] in {"a", "b"} and record["score"] >= 3.0
        assert set(record["scores"]) == {"a", "b"}
    assert (folder / "score_histogram.png").stat().st_size > 0
    general = [json.loads(line) for line in (folder / "general.jsonl").read_text().splitlines()]
    assert [(g["prompt"], g["response"]) for g in general] == [(r["instruction"], r["response"]) for r in records]


@pytest.mark.parametrize("after_calls", [2, 5, 9])  # in the instruction, response and judging passes
def test_resume_after_interruption_gives_the_uninterrupted_result(tmp_path: Path, tiny_model_path: str,
                                                                  after_calls: int) -> None:
    reference = synthesizer(tiny_model_path).build(tmp_path / "straight")
    with pytest.raises(Interrupted):
        synthesizer(tiny_model_path, interrupting(after_calls)).build(tmp_path / "killed")
    assert not synthesizer(tiny_model_path).folder(tmp_path / "killed").exists()  # nothing half-written
    resumed = synthesizer(tiny_model_path).build(tmp_path / "killed")
    for name in ("dataset.jsonl", "general.jsonl"):
        assert filecmp.cmp(reference / name, resumed / name, shallow=False), name
    straight = sorted(p.name for p in (tmp_path / "straight" / "self_synth").glob("*.jsonl"))
    for name in straight:  # every journal holds each record once, in the same content
        lines = (tmp_path / "killed" / "self_synth" / name).read_text().splitlines()
        assert len(lines) == len(set(lines))
        assert sorted(lines) == sorted((tmp_path / "straight" / "self_synth" / name).read_text().splitlines())


def test_real_sampling_of_a_random_model_is_truncated_and_reported(tmp_path: Path, tiny_model_path: str) -> None:
    """Without the script, the tiny random model never ends a turn: a clear error, not an empty set."""
    with pytest.raises(DataError, match="no usable instruction among 10 samples .*10 truncated"):
        synthesizer(tiny_model_path, generate=generate_batch).build(tmp_path)


def test_sampling_is_seeded_and_reports_unfinished_generations(tiny_model_path: str, tokenizer: Any) -> None:
    import torch

    model = load_model(tiny_model_path)
    prompt = pre_query_ids(tokenizer)
    torch.manual_seed(3)
    first = generate_batch(model, tokenizer, [prompt] * 3, 5, Sampling(1.0, 0.98))
    torch.manual_seed(3)
    again = generate_batch(model, tokenizer, [prompt] * 3, 5, Sampling(1.0, 0.98))
    assert first == again and not any(g.finished for g in first)
    # A stop id the model emits ends it: greedy's first token, declared as a stop token.
    with torch.no_grad():
        first_id = int(model(torch.tensor([prompt])).logits[0, -1].argmax())
    assert generate_batch(model, tokenizer, [prompt], 5, stop_ids=[first_id])[0].finished


# --- settings ----------------------------------------------------------------------------------------

SOURCE = "method.transforms.self_synth.source"  # where conf/method/self_synth.yaml builds the source


@pytest.mark.parametrize(("override", "key"), [
    (f"{SOURCE}.instructions.count=0", f"{SOURCE}.instructions.count"),
    (f"{SOURCE}.responses.top_p=1.5", f"{SOURCE}.responses.top_p"),
    (f"{SOURCE}.judge.threshold=6", f"{SOURCE}.judge.threshold"),
    (f"{SOURCE}.judge.rubric='Rate {{response}}'", f"{SOURCE}.judge.rubric"),
    (f"+{SOURCE}.responses.temprature=0.5", f"{SOURCE}.responses.temprature"),
    (f"{SOURCE}.committee={{self:null,qwen25_coder_05b:null}}", f"{SOURCE}.committee"),
    (f"{SOURCE}.oversample=0", f"{SOURCE}.oversample"),
    (f"{SOURCE}.generator={{_target_:builtins.dict,_partial_:false}}", f"{SOURCE}.generator"),  # {}: not callable
    ("method.transforms.self_synth.ratio=2", "method.transforms.self_synth.ratio"),
    ("device=tpu", "device"),
])
def test_bad_self_synth_settings_name_their_key(override: str, key: str) -> None:
    from helpers import compose_config

    from ragforget.methods.build import build_method

    cfg = compose_config(["method=self_synth", override])
    with pytest.raises(ConfigError, match=f"'{key}'"):
        build_method(cfg.method)


def test_a_bad_value_inside_the_generator_node_names_its_full_key() -> None:
    """The generator's node reaches the source detached (it instantiates it itself): the source puts
    'generator' in front of the relative key, and the node the source was built from goes before that."""
    from helpers import compose_config

    from ragforget.methods.build import build_method

    cfg = compose_config(["method=self_synth", f"~{SOURCE}.generator",
                          f"+{SOURCE}.generator={{_target_:ragforget.methods.l2sp.L2SP,weight:-1}}"])
    with pytest.raises(ConfigError) as error:
        build_method(cfg.method)
    assert error.value.key == f"{SOURCE}.generator.weight"


def test_instruction_count_needs_a_known_number_of_training_examples() -> None:
    from helpers import compose_config
    from omegaconf import OmegaConf

    cfg = compose_config(["method=self_synth", "experiment=quick"])
    assert cfg.method.transforms.self_synth.source.instructions.count == 30  # 2.5 x 0.1 x 120
    cfg = compose_config(["method=self_synth", "experiment=quick", "method.transforms.self_synth.ratio=0.2",
                          "method.transforms.self_synth.source.oversample=3"])
    assert cfg.method.transforms.self_synth.source.instructions.count == 72  # 3 x 0.2 x 120
    cfg = compose_config(["method=self_synth", "train.max_examples=null"])
    with pytest.raises(Exception, match="ceil_product got null.*set the value explicitly"):
        OmegaConf.to_container(cfg.method.transforms.self_synth, resolve=True)


def test_ablation_configs_shrink_the_committee_and_the_filter() -> None:
    from helpers import compose_config

    from ragforget.methods.build import build_method

    def built(name: str) -> Synthesizer:
        cfg = compose_config([f"method={name}"])
        source = build_method(cfg.method).transforms["self_synth"].source
        assert isinstance(source, SynthesizedGeneralData)
        return source.synthesizer

    full, one_by_one, one_by_three = built("self_synth"), built("self_synth_1x1"), built("self_synth_1x3")
    assert [m.name for m in full.committee] == ["self", "qwen25_coder_05b"] and full.judge.enabled
    assert [m.name for m in one_by_one.committee] == ["self"] and one_by_one.responses.per_model == 1
    assert not one_by_one.judge.enabled
    assert [m.name for m in one_by_three.committee] == ["self"] and one_by_three.responses.per_model == 3
    assert one_by_three.judge.enabled
    # The model being fine-tuned writes the instructions and is the committee's first member.
    assert full.instruction_model.identity == full.committee[0].identity


# --- end to end --------------------------------------------------------------------------------------

def self_synth_config(tmp_path: Path, tiny_model_path: str, *overrides: str) -> Any:
    """method=self_synth on the tiny model, with a second member loaded the Hub way (hf config, local dir)."""
    from helpers import tiny_config

    return tiny_config(tmp_path, "method=self_synth", f"{SOURCE}.committee.qwen25_coder_05b=null",
                       f"+model@{SOURCE}.committee.local=hf",
                       f"{SOURCE}.committee.local.name_or_path={tiny_model_path}",
                       f"{SOURCE}.committee.local.dtype=float32",
                       f"{SOURCE}.instructions.count=8", f"{SOURCE}.responses.max_new_tokens=8",
                       f"{SOURCE}.generator._target_=synth_fakes.scripted_generate", *overrides)


def test_synthesize_stage_alone_then_training_reuses_the_set(tmp_path: Path, tiny_model_path: str) -> None:
    from helpers import run_of
    from mlflow.tracking import MlflowClient

    from ragforget.pipeline import run_job

    cfg = self_synth_config(tmp_path, tiny_model_path, "stage=synthesize")
    metrics = run_job(cfg, tmp_path / "synth")
    assert metrics["self_synth/instructions_sampled"] == 8 and metrics["self_synth/rows"] >= 1
    run = run_of(cfg, tmp_path / "synth")
    assert run.data.tags["method"] == "self_synth" and run.data.tags["stage"] == "synthesize"
    assert run.data.params[f"{SOURCE}.instructions.count"] == "8"
    assert run.data.params[f"{SOURCE}.committee.local.name_or_path"] == tiny_model_path
    client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "general_data")}
    assert {f"general_data/{name}" for name in ("dataset.jsonl", "general.jsonl", "stats.json",
                                                "score_histogram.png")} <= logged

    cfg = self_synth_config(tmp_path, tiny_model_path)
    trained = run_job(cfg, tmp_path / "train")
    assert trained["self_synth/rows"] == metrics["self_synth/rows"]  # the same cached set
    assert trained["replay/general_examples"] == 1  # round(0.1 * 8)
    assert "odqa/acc" in trained and "retention/macro_avg" in trained
    assert run_of(cfg, tmp_path / "train").info.status == "FINISHED"


def test_a_cold_and_a_warm_cache_train_the_same_adapter(tmp_path: Path, tiny_model_path: str) -> None:
    """Synthesizing on a cold cache draws from the global RNGs, reading the set from a warm one does not:
    the model's init and training must not depend on which happened."""
    from helpers import cold_cache

    from ragforget.pipeline import run_job

    cfg = self_synth_config(tmp_path, tiny_model_path, f"paths.cache_dir={cold_cache(tmp_path)}")
    adapters = []
    for name in ("cold", "warm"):
        metrics = run_job(cfg, tmp_path / name)
        assert metrics["base_eval/reused"] == float(name == "warm")
        adapters.append((tmp_path / name / "checkpoint" / "adapter" / "adapter_model.safetensors").read_bytes())
    assert adapters[0] == adapters[1]
