"""Shared fixtures. Offline switches are set before any Hugging Face import; helpers live in helpers.py."""

from __future__ import annotations

import ragforget.env

ragforget.env.apply_defaults()

import pytest  # noqa: E402
from helpers import model_snapshot  # noqa: E402

from ragforget.conf_resolvers import register_resolvers  # noqa: E402

register_resolvers()


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    """The tiny random Llama snapshot (SmolLM2 tokenizer)."""
    return model_snapshot("tiny_random")
