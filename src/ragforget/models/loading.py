"""Load a tokenizer and a causal LM from a materialized source, and attach LoRA adapters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ragforget.errors import ConfigError
from ragforget.utils.device import resolve_device

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def resolve_dtype(name: str) -> torch.dtype:
    """Map a config dtype name to torch, listing the choices when it is unknown."""
    if name not in DTYPES:
        raise ConfigError("model.dtype", f"unknown dtype '{name}'", f"choose one of {sorted(DTYPES)}")
    return DTYPES[name]


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer; models without a pad token pad with eos (masks come from attention_mask)."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def starting_model_key(model_cfg: DictConfig) -> dict[str, Any]:
    """What identifies the starting model in cache keys: its config without ``lora``.

    The adapter settings shape what gets trained, not the weights training starts from, so the base
    model's evaluation (and SDFT's rewrites, EWC's Fisher) is shared across LoRA ranks.
    """
    key = OmegaConf.to_container(model_cfg, resolve=True)
    assert isinstance(key, dict)
    return {str(name): value for name, value in key.items() if name != "lora"}


def load_model(name_or_path: str, dtype: str = "float32", device: str = "cpu") -> PreTrainedModel:
    """Load a causal LM in its dtype straight onto ``device`` (no CPU copy first), in eval mode."""
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=resolve_dtype(dtype),
                                                 device_map=torch.device(resolve_device(device)))
    model.eval()
    return model


def attach_lora(model: PreTrainedModel, lora: Mapping[str, Any]) -> PreTrainedModel:
    """Wrap ``model`` with fresh LoRA adapters; only the adapters are trainable afterwards."""
    from peft import LoraConfig, get_peft_model

    for key in ("r", "alpha"):
        if lora.get(key) is None or lora[key] <= 0:
            raise ConfigError(f"model.lora.{key}", f"must be a positive number, got {lora.get(key)!r}",
                              "set model.lora=null for full fine-tuning")
    targets = lora.get("target_modules", "all-linear")
    config = LoraConfig(
        r=int(lora["r"]),
        lora_alpha=float(lora["alpha"]),  # type: ignore[arg-type]  # peft annotates int; any number scales
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)  # type: ignore[return-value]  # forwards every PreTrainedModel attribute


def has_adapters(model: torch.nn.Module) -> bool:
    """True for a PEFT model, whose base weights are reachable with adapters disabled."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
