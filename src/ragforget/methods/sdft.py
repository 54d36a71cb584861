"""SDFT (Yang et al., ACL 2024, arXiv 2402.13669): train on the base model's own rewrite of each target.

The starting model answers each training request again with the gold answer shown as a reference.
A rewrite replaces the target only if it is still correct (contains a gold answer under SQuAD
normalization) and does not talk about the reference; otherwise the original target stays. Fine-tuning
on text the model already finds likely moves it less, which is how SDFT limits forgetting.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ragforget.data.answers import substring_match
from ragforget.data.encoding import encode_prompt
from ragforget.data.prompt import Message, RagPrompt
from ragforget.data.rag_examples import TrainingExample
from ragforget.errors import DataError, require
from ragforget.methods.base import DataTransform, MethodContext
from ragforget.models.generation import Generation, greedy_generations
from ragforget.models.loading import load_model
from ragforget.utils.device import check_device, release_memory
from ragforget.utils.hashing import code_and_versions, stable_hash
from ragforget.utils.io import atomic_path, cache_lock, read_jsonl, write_json, write_jsonl
from ragforget.utils.logging import get_logger
from ragforget.utils.templates import check_placeholders

log = get_logger(__name__)

PLACEHOLDERS = {"request", "reference"}  # what the distillation template must use (conf/method/sdft.yaml)

# (prompt token ids, context) -> one rewrite per prompt, with whether it ended by itself (a stop token)
# or was cut at max_new_tokens. Swappable so tests need no real model.
Generator = Callable[[Sequence[list[int]], MethodContext], list[Generation]]


class SelfDistill(DataTransform):
    """Replace each RAG example's target with the starting model's own correct rewrite of it.

    Examples without gold answers (general data mixed in by another transform) pass through
    untouched. Raw rewrites are cached per (model, examples, prompt, generation settings); the keep
    rule is re-applied on every run, since it is cheap and its banned phrases need no regeneration.
    """

    def __init__(self, template: str, max_new_tokens: int, batch_size: int, banned: Sequence[str], device: str,
                 answer_cue: str = RagPrompt.plain_answer_cue, generator: Generator | None = None) -> None:
        require(max_new_tokens > 0, "max_new_tokens", f"must be > 0, got {max_new_tokens}",
                "enough for a short answer sentence, e.g. 48", relative=True)
        require(batch_size > 0, "batch_size", f"must be > 0, got {batch_size}", relative=True)
        check_placeholders(template, PLACEHOLDERS, "template", relative=True)
        banned = [str(word) for word in banned]
        require(all(word.strip() for word in banned), "banned", "must not contain empty phrases", relative=True)
        self.template = template
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self.banned = [word.lower() for word in banned]
        self.answer_cue = answer_cue
        self.device = check_device(device)
        self.generate: Generator = generator or self.generate_with_base_model

    def __call__(self, examples: list[TrainingExample], context: MethodContext) -> list[TrainingExample]:
        rag = [i for i, ex in enumerate(examples) if ex.golden_answers]
        if not rag:
            context.metrics.update({"sdft/kept_fraction": 0.0, "sdft/cut_fraction": 0.0, "sdft/cache_hit": 0.0,
                                    "sdft/rewrite_s": 0.0})
            return examples
        rag_examples = [examples[i] for i in rag]
        rewrites, cache_hit, seconds = self.rewrites(rag_examples, context)
        result = list(examples)
        kept = 0
        for i, example, rewrite in zip(rag, rag_examples, rewrites):
            # A rewrite cut at max_new_tokens is a failed rewrite: training would teach the model to end
            # a half sentence with an end-of-turn.
            if rewrite.finished and self.keeps(rewrite.text, example):
                result[i] = dataclasses.replace(example, target=rewrite.text)
                kept += 1
        cut = sum(not rewrite.finished for rewrite in rewrites)
        context.metrics.update({"sdft/kept_fraction": kept / len(rag), "sdft/cut_fraction": cut / len(rag),
                                "sdft/cache_hit": float(cache_hit), "sdft/rewrite_s": seconds})
        log.info("sdft: kept %d of %d rewrites (%.0f%%; %d cut at max_new_tokens); the rest train on the "
                 "original target", kept, len(rag), 100 * kept / len(rag), cut)
        return result

    def keeps(self, rewrite: str, example: TrainingExample) -> bool:
        """The SDFT filter: still correct, and silent about the reference."""
        lowered = rewrite.lower()
        return (substring_match(rewrite, example.golden_answers) == 1.0
                and not any(word in lowered for word in self.banned))

    def rewrites(self, examples: list[TrainingExample], context: MethodContext
                 ) -> tuple[list[Generation], bool, float]:
        """Raw rewrites of ``examples`` (cached), whether they came from the cache, generation seconds."""
        folder = self.cache_folder(examples, context)
        with cache_lock(folder):  # parallel jobs rewrite once
            if (folder / "rewrites.jsonl").exists():
                log.info("sdft: reusing cached rewrites %s", folder)
                return _read_rewrites(folder / "rewrites.jsonl", examples), True, 0.0
            return self._rewrite(examples, context, folder)

    def _rewrite(self, examples: list[TrainingExample], context: MethodContext,
                 folder: Path) -> tuple[list[Generation], bool, float]:
        log.info("sdft: rewriting %d targets with the starting model (cached in %s)", len(examples), folder)
        start = time.perf_counter()
        prompts = [self.prompt_ids(ex, context) for ex in examples]
        rewrites = self.generate(prompts, context)
        seconds = time.perf_counter() - start
        if len(rewrites) != len(examples):
            raise RuntimeError(f"sdft generator returned {len(rewrites)} rewrites for {len(examples)} prompts")
        with atomic_path(folder) as tmp:
            write_jsonl(tmp / "rewrites.jsonl", [
                {"id": ex.id, "target": ex.target, "rewrite": rewrite.text, "finished": rewrite.finished}
                for ex, rewrite in zip(examples, rewrites)])
            write_json(tmp / "settings.json", self.settings(context))
        return rewrites, False, seconds

    def settings(self, context: MethodContext) -> dict[str, object]:
        """Everything besides the examples that changes the rewrites."""
        return {**code_and_versions(__name__, "ragforget.models.generation", "ragforget.data"),
                "model": context.model_key, "dtype": context.dtype,
                "chat_template": context.chat_template, "template": self.template,
                "answer_cue": self.answer_cue, "max_new_tokens": self.max_new_tokens,
                # Left padding differs with the batch size, which can flip a greedy token in bf16.
                "batch_size": self.batch_size}

    def cache_folder(self, examples: list[TrainingExample], context: MethodContext) -> Path:
        key = stable_hash({
            **self.settings(context),
            "examples": [(ex.id, ex.messages, ex.plain_text, ex.target, ex.golden_answers) for ex in examples],
        })
        return Path(context.cache_dir) / "sdft" / key

    def prompt_ids(self, example: TrainingExample, context: MethodContext) -> list[int]:
        """The distillation prompt: the original request with the target shown as the reference."""
        if context.chat_template:
            return encode_prompt(context.tokenizer, self.distill_messages(example), True, "")
        request = example.plain_text
        # The reference goes before the answer cue, so the model still answers right after it.
        if self.answer_cue and request.endswith(self.answer_cue):
            request = request[: -len(self.answer_cue)]
        text = self.template.format(request=request, reference=example.target) + self.answer_cue
        return encode_prompt(context.tokenizer, [], False, text)

    def distill_messages(self, example: TrainingExample) -> list[Message]:
        """The example's messages with the reference appended to its last user turn."""
        users = [i for i, m in enumerate(example.messages) if m["role"] == "user"]
        if not users:
            raise ValueError(f"sdft: example {example.id} has no user turn to add the reference to")
        messages = [dict(m) for m in example.messages]
        last = users[-1]
        messages[last]["content"] = self.template.format(request=messages[last]["content"],
                                                         reference=example.target)
        return messages

    def generate_with_base_model(self, prompts: Sequence[list[int]], context: MethodContext) -> list[Generation]:
        """Greedy rewrites by the starting model, loaded for this pass only."""
        model = load_model(context.model_path, context.dtype, self.device)
        try:
            return greedy_generations(model, context.tokenizer, prompts, self.batch_size, self.max_new_tokens,
                                      desc="sdft rewrite")
        finally:
            del model
            release_memory()


def _read_rewrites(path: Path, examples: list[TrainingExample]) -> list[Generation]:
    records = read_jsonl(path, required=("id", "rewrite", "finished"))
    if [r["id"] for r in records] != [ex.id for ex in examples]:
        raise DataError(path, None, "cached rewrites do not match the training examples",
                        "delete this folder to regenerate them")
    return [Generation(str(r["rewrite"]), bool(r["finished"])) for r in records]
