"""Shared fixtures. Offline switches are set before any Hugging Face import."""

from __future__ import annotations

import ragforget.env

ragforget.env.apply_defaults()

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ragforget.conf_resolvers import register_resolvers  # noqa: E402

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
register_resolvers()


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose conf/config.yaml with overrides, as run.py would (without a Hydra run)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


def model_snapshot(model: str) -> str:
    """The snapshot folder of ``conf/model/<model>.yaml``, materialized once per cache."""
    import hydra

    from ragforget.assets.cache import resolve_cache_dir

    cfg = compose_config([f"model={model}"])
    return hydra.utils.instantiate(cfg.model.source).materialize(resolve_cache_dir(cfg.paths.cache_dir))


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    """The tiny random Llama snapshot (SmolLM2 tokenizer)."""
    return model_snapshot("tiny_random")
