"""The models self_synth works with: one config each, loaded one at a time for one pass."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragforget.data.encoding import encode_prompt
from ragforget.data.general import PLAIN_RESPONSE_CUE
from ragforget.models.loading import load_model, load_tokenizer
from ragforget.utils.device import release_memory
from ragforget.utils.instantiate import instantiate

# The parts of a model config that decide what it generates (``lora`` and ``name`` do not).
IDENTITY_KEYS = ("source", "dtype", "chat_template")


@dataclass(frozen=True)
class Member:
    """A model by name and its resolved model config (same schema as conf/model/*.yaml)."""

    name: str
    config: Mapping[str, Any]

    @property
    def identity(self) -> dict[str, Any]:
        """What identifies this model's outputs in cache keys."""
        return {key: self.config.get(key) for key in IDENTITY_KEYS}

    @property
    def chat_template(self) -> bool:
        return bool(self.config.get("chat_template", True))

    @contextlib.contextmanager
    def loaded(self, cache_dir: Path, device: str) -> Iterator[tuple[Any, Any]]:
        """(model, tokenizer) on ``device`` for one pass; the memory is given back afterwards."""
        path = instantiate(self.config["source"]).materialize(Path(cache_dir))
        model = load_model(path, str(self.config.get("dtype", "bfloat16")), device)
        try:
            yield model, load_tokenizer(path)
        finally:
            del model
            release_memory()

    def prompt_ids(self, tokenizer: Any, user_text: str, reply_prefix: str = "") -> list[int]:
        """``user_text`` as a user turn (plain text for models without a template), then ``reply_prefix``."""
        ids = encode_prompt(tokenizer, [{"role": "user", "content": user_text}], self.chat_template,
                            user_text + PLAIN_RESPONSE_CUE)
        if reply_prefix:
            text = reply_prefix if self.chat_template else " " + reply_prefix
            ids = ids + list(tokenizer(text, add_special_tokens=False)["input_ids"])
        return ids

