"""The checkpoint folder: the only hand-off from training to evaluation.

Layout::

    checkpoint/
      config.yaml    resolved config of the run that wrote it
      adapter/       PEFT adapter (LoRA runs)      -- or --
      model/         full weights (full fine-tuning)
      tokenizer/     the tokenizer used in training

A folder with neither adapter/ nor model/ means "the starting model" (method=base).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ragforget.assets.cache import resolve_cache_dir
from ragforget.assets.sources import ModelSource
from ragforget.errors import RagforgetError
from ragforget.models.loading import has_adapters, load_model, load_tokenizer
from ragforget.utils.instantiate import instantiate
from ragforget.utils.io import atomic_path


def save_checkpoint_folder(path: Path, model: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase,
                           cfg: DictConfig) -> Path:
    """Write the folder atomically; ``model=None`` records an untrained (base) run."""
    with atomic_path(path) as tmp:
        tmp.mkdir()
        OmegaConf.save(cfg, tmp / "config.yaml", resolve=True)
        tokenizer.save_pretrained(tmp / "tokenizer")
        if model is not None:
            model.save_pretrained(tmp / ("adapter" if has_adapters(model) else "model"))
    return path


def checkpoint_config(path: Path) -> DictConfig:
    """The resolved config stored in a checkpoint folder."""
    config_file = Path(path) / "config.yaml"
    if not config_file.exists():
        raise RagforgetError(f"{path} is not a checkpoint folder (no config.yaml); "
                             "pass the 'checkpoint' folder written by a training run")
    cfg = OmegaConf.load(config_file)
    assert isinstance(cfg, DictConfig)
    return cfg


def base_model_path(cfg: DictConfig, cache_dir: Path | None = None) -> str:
    """Materialize the starting model named by a config (packaged, hub id or tiny random)."""
    source: ModelSource = instantiate(cfg.model.source)
    return source.materialize(cache_dir or resolve_cache_dir(cfg.paths.get("cache_dir")))


def load_checkpoint_folder(path: Path, cache_dir: Path | None = None, device: str = "cpu"
                           ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, DictConfig]:
    """Rebuild the trained model on ``device`` from a checkpoint folder alone (no training module needed)."""
    path = Path(path)
    cfg = checkpoint_config(path)
    tokenizer = load_tokenizer(str(path / "tokenizer"))
    if (path / "model").exists():
        return load_model(str(path / "model"), cfg.model.dtype, device), tokenizer, cfg
    model = load_model(base_model_path(cfg, cache_dir), cfg.model.dtype, device)
    if (path / "adapter").exists():
        from peft import PeftModel

        model = PeftModel.from_pretrained(  # type: ignore[assignment]  # forwards the model's attributes
            model, str(path / "adapter"), torch_device=str(model.device))
        model.eval()
    return model, tokenizer, cfg
