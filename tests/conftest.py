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


def visible(folder: Path) -> list[str]:
    """The entries of ``folder`` a user sees: not the hidden lock files of cache entries."""
    return sorted(p.name for p in Path(folder).iterdir() if not p.name.startswith("."))


def cold_cache(tmp_path: Path) -> Path:
    """An asset cache with only the downloaded packages and model snapshots (shared with the real cache):
    corpus, QA splits, retention suites, indexes and every method's cache are built from scratch."""
    from ragforget.assets.cache import resolve_cache_dir

    cache = tmp_path / "cold_cache"
    cache.mkdir()
    shared = resolve_cache_dir(None)
    for name in ("downloads", "models"):
        (shared / name).mkdir(exist_ok=True)
        (cache / name).symlink_to(shared / name)
    return cache


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
