"""The checkpoint folder round-trips a LoRA model exactly, records base runs, and is written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import compose_config
from omegaconf import DictConfig, OmegaConf

from ragforget.assets.cache import resolve_cache_dir
from ragforget.errors import RagforgetError
from ragforget.models.loading import attach_lora, has_adapters, load_model, load_tokenizer
from ragforget.training.checkpoint import checkpoint_config, load_checkpoint_folder, save_checkpoint_folder

INPUT_IDS = torch.tensor([[1, 504, 22186, 735, 2, 378, 9, 42]])


@pytest.fixture(scope="module")
def cfg() -> DictConfig:
    return compose_config(["model=tiny_random", "method=selfaug", "seed=3"])


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path: str):
    return load_tokenizer(tiny_model_path)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=INPUT_IDS, attention_mask=torch.ones_like(INPUT_IDS)).logits


def _lora_model(path: str, cfg: DictConfig) -> torch.nn.Module:
    model = attach_lora(load_model(path, cfg.model.dtype), cfg.model.lora)
    generator = torch.Generator().manual_seed(0)
    perturbed = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                assert torch.count_nonzero(param) == 0     # LoRA B starts at zero
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
                perturbed += 1
    assert perturbed > 0
    return model


def test_lora_checkpoint_round_trips(tmp_path: Path, tiny_model_path: str, tokenizer, cfg: DictConfig) -> None:
    base_logits = _logits(load_model(tiny_model_path, cfg.model.dtype))
    model = _lora_model(tiny_model_path, cfg)
    expected = _logits(model)
    assert not torch.allclose(expected, base_logits, atol=1e-3)   # the perturbation changed the outputs

    folder = save_checkpoint_folder(tmp_path / "checkpoint", model, tokenizer, cfg)
    assert folder == tmp_path / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["adapter", "config.yaml", "tokenizer"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]   # no temporary leftovers

    loaded, loaded_tokenizer, loaded_cfg = load_checkpoint_folder(folder, cache_dir=resolve_cache_dir())
    assert has_adapters(loaded)
    assert torch.allclose(_logits(loaded), expected, atol=1e-5)
    assert loaded_tokenizer.pad_token_id == loaded_tokenizer.eos_token_id == 2
    assert loaded_tokenizer("The Beatles")["input_ids"] == tokenizer("The Beatles")["input_ids"]
    assert loaded_cfg.method.name == "selfaug"
    assert loaded_cfg.seed == 3
    assert loaded_cfg.model.name == "tiny_random"


def test_saved_config_is_resolved(tmp_path: Path, tokenizer, cfg: DictConfig) -> None:
    save_checkpoint_folder(tmp_path / "checkpoint", None, tokenizer, cfg)
    text = (tmp_path / "checkpoint" / "config.yaml").read_text()
    assert "${" not in text
    stored = checkpoint_config(tmp_path / "checkpoint")
    assert stored.run_name == "selfaug-tiny_random-squad_open-s3"
    assert stored.method.terms.selfaug.weight == 0.5
    assert OmegaConf.to_container(stored.model.lora) == OmegaConf.to_container(cfg.model.lora)


def test_base_folder_loads_the_untouched_model(tmp_path: Path, tiny_model_path: str, tokenizer,
                                               cfg: DictConfig) -> None:
    folder = save_checkpoint_folder(tmp_path / "checkpoint", None, tokenizer, cfg)
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "tokenizer"]
    loaded, _, _ = load_checkpoint_folder(folder, cache_dir=resolve_cache_dir())
    assert not has_adapters(loaded)
    expected = _logits(load_model(tiny_model_path, cfg.model.dtype))
    assert torch.allclose(_logits(loaded), expected, atol=1e-5)


def test_full_model_checkpoint_round_trips(tmp_path: Path, tiny_model_path: str, tokenizer,
                                           cfg: DictConfig) -> None:
    model = load_model(tiny_model_path, cfg.model.dtype)
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)   # a "trained" full model differs from the base
    expected = _logits(model)
    folder = save_checkpoint_folder(tmp_path / "checkpoint", model, tokenizer, cfg)
    assert (folder / "model").is_dir() and not (folder / "adapter").exists()
    loaded, _, _ = load_checkpoint_folder(folder)
    assert not has_adapters(loaded)
    assert torch.allclose(_logits(loaded), expected, atol=1e-5)


def test_folder_without_config_raises(tmp_path: Path) -> None:
    (tmp_path / "not_a_checkpoint" / "tokenizer").mkdir(parents=True)
    with pytest.raises(RagforgetError, match="config.yaml"):
        load_checkpoint_folder(tmp_path / "not_a_checkpoint")
    with pytest.raises(RagforgetError, match="config.yaml"):
        checkpoint_config(tmp_path / "missing")


def test_failed_save_leaves_no_folder(tmp_path: Path, tokenizer, cfg: DictConfig,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tokenizer, "save_pretrained", broken)
    target = tmp_path / "checkpoint"
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint_folder(target, None, tokenizer, cfg)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []   # the temporary sibling is removed too


def test_failed_save_keeps_the_previous_folder(tmp_path: Path, tokenizer, cfg: DictConfig,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    target = save_checkpoint_folder(tmp_path / "checkpoint", None, tokenizer, cfg)
    before = sorted(p.name for p in target.iterdir())

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tokenizer, "save_pretrained", broken)
    with pytest.raises(OSError):
        save_checkpoint_folder(target, None, tokenizer, cfg)
    assert sorted(p.name for p in target.iterdir()) == before
    assert checkpoint_config(target).seed == 3
