"""OmegaConf resolvers used by the config files."""

from __future__ import annotations

from omegaconf import OmegaConf


def _basename(name_or_path: str) -> str:
    """'Qwen/Qwen2.5-7B-Instruct' -> 'Qwen2.5-7B-Instruct' (readable run names for hub models)."""
    return str(name_or_path).rstrip("/").split("/")[-1]


def register_resolvers() -> None:
    """Register once; safe to call repeatedly (tests compose configs many times)."""
    if not OmegaConf.has_resolver("basename"):
        OmegaConf.register_new_resolver("basename", _basename)
