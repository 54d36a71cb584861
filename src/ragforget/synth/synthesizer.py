"""Reconstructed general data (Ding & Wang 2025): instructions -> committee responses -> scores -> dataset.

Each pass writes a journal keyed by everything that determines it (so a changed setting starts a
new journal, while ablations that share a pass share its file), and the selected dataset is one
folder keyed by all of them::

    <cache>/self_synth/instructions-<key>.jsonl            raw pre-query samples
    <cache>/self_synth/responses-<member>-<key>.jsonl      each member's L responses per instruction
    <cache>/self_synth/scores-<judge>-on-<member>-<key>.jsonl   raw judge replies
    <cache>/self_synth/datasets/<key>/                     dataset.jsonl, general.jsonl, stats.json,
                                                           score_histogram.png

Cleaning, score parsing and selection are re-derived from the journals, so they are never stale.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragforget.errors import DataError
from ragforget.models.generation import Generation, Sampling
from ragforget.synth.committee import Member
from ragforget.synth.instructions import CleanedInstructions, clean_instructions, end_of_turn_ids, pre_query_ids
from ragforget.synth.journal import Journal, run_journaled
from ragforget.synth.judging import Candidate, ResponseSelection, parse_score, select_best
from ragforget.synth.plots import score_histogram
from ragforget.utils.hashing import code_and_versions, stable_hash
from ragforget.utils.io import atomic_path, cache_lock, write_json, write_jsonl
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

# (model, tokenizer, prompt ids, max new tokens, sampling or None for greedy, extra stop ids) -> generations.
GenerateFn = Callable[[Any, Any, Sequence[list[int]], int, "Sampling | None", Sequence[int]], list[Generation]]
# Bump when cleaning, parsing or selection change what a dataset folder holds.
FORMAT_VERSION = 2
DATASET_FILE = "dataset.jsonl"
GENERAL_FILE = "general.jsonl"
STATS_FILE = "stats.json"


@dataclass(frozen=True)
class InstructionSettings:
    count: int              # pre-query samples drawn
    temperature: float
    top_p: float
    max_new_tokens: int     # a sample without an end-of-turn by then is truncated, and dropped
    batch_size: int


@dataclass(frozen=True)
class ResponseSettings:
    per_model: int          # L: responses each committee member writes per instruction
    temperature: float
    top_p: float
    max_new_tokens: int     # the cap on a response's length
    batch_size: int
    trim_truncated: bool    # a response cut by the cap: trimmed to its last full sentence (true) or dropped


@dataclass(frozen=True)
class JudgeSettings:
    enabled: bool           # false: no scoring, the first complete candidate is kept (the 1 x 1 ablation)
    threshold: float | None  # drop instructions whose best mean score is lower
    rubric: str             # user turn with {instruction} and {response}
    prefill: str            # start of the judge's reply
    max_new_tokens: int
    batch_size: int

    def generation_identity(self) -> dict[str, Any]:
        """What changes the judges' replies (not the threshold, which only selection reads)."""
        return {"rubric": self.rubric, "prefill": self.prefill, "max_new_tokens": self.max_new_tokens,
                "batch_size": self.batch_size}


def _key(instruction: int, sample: int) -> str:
    return f"{instruction}:{sample}"


# A full stop after a digit is more often a list marker ("2. Add") than a sentence end.
_SENTENCE_END = re.compile(r"(?<!\d)\.(?=\s|$)|[!?](?=\s|$)|\n")


def trim_to_sentence(text: str) -> str:
    """``text`` up to its last sentence end or line break ("" when it has none)."""
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    return text[:ends[-1]].rstrip() if ends else ""


class Synthesizer:
    """Runs the three passes (resumable) and writes the selected dataset folder once."""

    def __init__(self, instruction_model: Member, committee: Sequence[Member], instructions: InstructionSettings,
                 responses: ResponseSettings, judge: JudgeSettings, seed: int, device: str,
                 generate: GenerateFn) -> None:
        self.instruction_model = instruction_model
        self.committee = list(committee)
        self.instructions = instructions
        self.responses = responses
        self.judge = judge
        self.seed = seed
        self.device = device
        self.generate = generate

    # --- keys ------------------------------------------------------------------------------------

    def instructions_key(self) -> str:
        return stable_hash({**code_and_versions("ragforget.synth", "ragforget.models.generation",
                                                "ragforget.data.answers"),
                            "model": self.instruction_model.identity,
                            "settings": dataclasses.asdict(self.instructions), "seed": self.seed})

    def responses_key(self, author: Member) -> str:
        return stable_hash({"instructions": self.instructions_key(), "format": FORMAT_VERSION,
                            "model": author.identity, "settings": dataclasses.asdict(self.responses),
                            "seed": self.seed})

    def scores_key(self, judge: Member, author: Member) -> str:
        return stable_hash({"responses": self.responses_key(author), "judge": judge.identity,
                            "settings": self.judge.generation_identity()})

    def dataset_key(self) -> str:
        passes = [(m.name, self.responses_key(m)) for m in self.committee]
        if self.judge.enabled:
            passes += [(j.name, self.scores_key(j, a)) for j in self.committee for a in self.committee]
        return stable_hash({"passes": passes, "format": FORMAT_VERSION, "enabled": self.judge.enabled,
                            "threshold": self.judge.threshold})

    @staticmethod
    def work_dir(cache_dir: Path) -> Path:
        return Path(cache_dir) / "self_synth"

    def folder(self, cache_dir: Path) -> Path:
        return self.work_dir(cache_dir) / "datasets" / self.dataset_key()

    # --- the passes --------------------------------------------------------------------------------

    def build(self, cache_dir: Path) -> Path:
        """The dataset folder: reused when it exists, else synthesized (resuming any journals)."""
        folder = self.folder(cache_dir)
        with cache_lock(folder):  # parallel jobs synthesize it once
            if (folder / GENERAL_FILE).exists():
                log.info("self_synth: reusing %s", folder)
            else:
                self._synthesize(cache_dir, folder)
        return folder

    def _synthesize(self, cache_dir: Path, folder: Path) -> None:
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        cleaned = clean_instructions(self.sample_instructions(cache_dir))
        seconds["instructions"] = time.perf_counter() - start
        log.info("self_synth: %d of %d instructions kept (%d empty, %d truncated, %d duplicates)",
                 len(cleaned.kept), cleaned.sampled, cleaned.dropped_empty, cleaned.dropped_truncated,
                 cleaned.dropped_duplicate)
        if not cleaned.kept:
            raise DataError(self.work_dir(cache_dir) / f"instructions-{self.instructions_key()}.jsonl", None,
                            f"no usable instruction among {cleaned.sampled} samples ({cleaned.dropped_empty} "
                            f"empty, {cleaned.dropped_truncated} truncated)",
                            "raise instructions.max_new_tokens or instructions.count of the self_synth source, "
                            "or use an instruct model that ends its turns")
        start = time.perf_counter()
        candidates = [c for author in self.committee for c in self.write_responses(cache_dir, author, cleaned.kept)]
        seconds["responses"] = time.perf_counter() - start
        start = time.perf_counter()
        statuses = self.score(cache_dir, candidates, cleaned.kept) if self.judge.enabled else Counter()
        seconds["judging"] = time.perf_counter() - start
        selection = select_best(candidates, len(cleaned.kept), self.judge.enabled, self.judge.threshold)
        stats = self.statistics(cleaned, candidates, statuses, selection, seconds)
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            rows = [self.dataset_row(c, cleaned.kept) for c in selection.chosen]
            write_jsonl(tmp / DATASET_FILE, rows)
            write_jsonl(tmp / GENERAL_FILE, ({"id": r["id"], "prompt": r["instruction"], "response": r["response"]}
                                             for r in rows))
            write_json(tmp / STATS_FILE, stats)
            if self.judge.enabled:
                score_histogram([c.mean_score for c in candidates if c.eligible and c.mean_score is not None],
                                [c.mean_score or 0.0 for c in selection.chosen], self.judge.threshold,
                                tmp / "score_histogram.png")
        log.info("self_synth: %d rows -> %s", len(selection.chosen), folder)

    def sample_instructions(self, cache_dir: Path) -> list[dict[str, Any]]:
        """Pass 1: ``count`` pre-query samples from the instruction model, journaled."""
        settings = self.instructions
        journal = Journal(self.work_dir(cache_dir) / f"instructions-{self.instructions_key()}.jsonl")
        with self.instruction_model.loaded(cache_dir, self.device) as (model, tokenizer):
            prompt = pre_query_ids(tokenizer, "model.chat_template")  # the instruction model is the model
            stops = end_of_turn_ids(tokenizer, "model.chat_template")

            def sample(batch: Sequence[int]) -> list[dict[str, Any]]:
                outputs = self.generate(model, tokenizer, [prompt] * len(batch), settings.max_new_tokens,
                                        Sampling(settings.temperature, settings.top_p), stops)
                return [{"key": str(i), "text": o.text, "finished": o.finished} for i, o in zip(batch, outputs)]

            return run_journaled(list(range(settings.count)), str, journal, sample, settings.batch_size,
                                 self.seed, "self_synth instructions")

    def write_responses(self, cache_dir: Path, author: Member, instructions: list[str]) -> list[Candidate]:
        """Pass 2: ``per_model`` sampled responses of ``author`` to every kept instruction."""
        settings = self.responses
        journal = Journal(self.work_dir(cache_dir) / f"responses-{author.name}-{self.responses_key(author)}.jsonl")
        with author.loaded(cache_dir, self.device) as (model, tokenizer):
            prompts = [author.prompt_ids(tokenizer, text) for text in instructions]
            stops = end_of_turn_ids(tokenizer) if author.chat_template else []
            # Sorted by prompt length so each left-padded batch wastes little compute; the order is
            # fixed by the instructions, so batches (and their seeds) are the same on every run.
            items = sorted(((i, s) for i in range(len(instructions)) for s in range(settings.per_model)),
                           key=lambda item: len(prompts[item[0]]))

            def respond(batch: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
                outputs = self.generate(model, tokenizer, [prompts[i] for i, _ in batch], settings.max_new_tokens,
                                        Sampling(settings.temperature, settings.top_p), stops)
                return [{"key": _key(i, s), "text": o.text, "finished": o.finished}
                        for (i, s), o in zip(batch, outputs)]

            records = run_journaled(items, lambda item: _key(*item), journal, respond, settings.batch_size,
                                    self.seed, f"self_synth responses ({author.name})")
        by_key = {r["key"]: r for r in records}
        return [self.candidate(i, author.name, s, by_key[_key(i, s)])
                for i in range(len(instructions)) for s in range(settings.per_model)]

    def candidate(self, instruction: int, author: str, sample: int, record: dict[str, Any]) -> Candidate:
        """A journaled response as a candidate; one cut by the token cap is trimmed or left incomplete."""
        if record["finished"]:
            return Candidate(instruction, author, sample, record["text"], complete=True)
        if self.responses.trim_truncated:
            trimmed = trim_to_sentence(record["text"])
            return Candidate(instruction, author, sample, trimmed, complete=bool(trimmed), truncated=True)
        return Candidate(instruction, author, sample, record["text"], complete=False, truncated=True)

    def score(self, cache_dir: Path, candidates: list[Candidate], instructions: list[str]) -> Counter[str]:
        """Pass 3: every member scores every eligible candidate (greedy); returns parse statuses."""
        statuses: Counter[str] = Counter()
        for judge in self.committee:
            with judge.loaded(cache_dir, self.device) as (model, tokenizer):
                for author in self.committee:
                    own = {_key(c.instruction, c.sample): c for c in candidates
                           if c.author == author.name and c.eligible}
                    journal = Journal(self.work_dir(cache_dir) / f"scores-{judge.name}-on-{author.name}-"
                                      f"{self.scores_key(judge, author)}.jsonl")
                    replies = self.judge_replies(judge, model, tokenizer, own, instructions, journal)
                    for key, reply in replies.items():
                        parsed = parse_score(reply)
                        own[key].scores[judge.name] = parsed.score
                        statuses[parsed.status] += 1
        return statuses

    def judge_replies(self, judge: Member, model: Any, tokenizer: Any, candidates: dict[str, Candidate],
                      instructions: list[str], journal: Journal) -> dict[str, str]:
        """One judge's raw reply to the rubric for each candidate (keyed like ``candidates``)."""
        settings = self.judge
        stops = end_of_turn_ids(tokenizer) if judge.chat_template else []
        prompts = {key: judge.prompt_ids(tokenizer, settings.rubric.format(
            instruction=instructions[c.instruction], response=c.text), settings.prefill)
            for key, c in candidates.items()}

        def rate(batch: Sequence[str]) -> list[dict[str, Any]]:
            outputs = self.generate(model, tokenizer, [prompts[k] for k in batch], settings.max_new_tokens,
                                    None, stops)
            return [{"key": k, "reply": o.text} for k, o in zip(batch, outputs)]

        records = run_journaled(sorted(prompts, key=lambda key: len(prompts[key])), str, journal, rate,
                                settings.batch_size, self.seed, f"self_synth scores ({judge.name})")
        return {record["key"]: record["reply"] for record in records}

    # --- outputs -----------------------------------------------------------------------------------

    def dataset_row(self, candidate: Candidate, instructions: list[str]) -> dict[str, Any]:
        return {"id": f"self_synth-{candidate.instruction}", "instruction": instructions[candidate.instruction],
                "response": candidate.text, "model": candidate.author, "sample": candidate.sample,
                "score": candidate.mean_score, "scores": candidate.scores}

    def statistics(self, cleaned: CleanedInstructions, candidates: list[Candidate], statuses: Counter[str],
                   selection: ResponseSelection, seconds: dict[str, float]) -> dict[str, float]:
        """Flat figures for stats.json and MLflow (``self_synth/<name>``)."""
        chosen_scores = [c.mean_score for c in selection.chosen if c.mean_score is not None]
        stats: dict[str, float] = {
            "instructions_sampled": cleaned.sampled, "instructions_empty": cleaned.dropped_empty,
            "instructions_truncated": cleaned.dropped_truncated, "instructions_duplicate": cleaned.dropped_duplicate,
            "dedup_rate": cleaned.dedup_rate, "instructions_kept": len(cleaned.kept),
            "candidates": len(candidates), "candidates_unusable": sum(not c.eligible for c in candidates),
            "candidates_truncated": sum(c.truncated for c in candidates),
            "scores": sum(statuses.values()), "scores_unparseable": statuses["unparseable"],
            "scores_out_of_range": statuses["out_of_range"],
            "dropped_no_complete_response": selection.no_complete_response, "dropped_unscored": selection.unscored,
            "dropped_below_threshold": selection.below_threshold, "rows": len(selection.chosen),
            "mean_kept_score": sum(chosen_scores) / len(chosen_scores) if chosen_scores else 0.0,
        }
        for member in self.committee:
            stats[f"rows_from_{member.name}"] = sum(c.author == member.name for c in selection.chosen)
        stats.update({f"{name}_s": value for name, value in seconds.items()})
        return {key: float(value) for key, value in stats.items()}
