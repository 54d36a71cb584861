"""OmegaConf resolvers used by the config files."""

from __future__ import annotations

import math

from omegaconf import OmegaConf


def _basename(name_or_path: str) -> str:
    """'Qwen/Qwen2.5-7B-Instruct' -> 'Qwen2.5-7B-Instruct' (readable run names for hub models)."""
    return str(name_or_path).rstrip("/").split("/")[-1]


def _ceil_product(*factors: float | None) -> int:
    """The product of the factors, rounded up (e.g. samples to draw for ratio * N rows)."""
    if any(factor is None for factor in factors):
        raise ValueError(f"ceil_product got null among {list(factors)}: set the value explicitly "
                         "(train.max_examples=null means all examples, whose count is known only later)")
    return math.ceil(math.prod(float(factor) for factor in factors if factor is not None))


def register_resolvers() -> None:
    """Register once; safe to call repeatedly (tests compose configs many times)."""
    if not OmegaConf.has_resolver("basename"):
        OmegaConf.register_new_resolver("basename", _basename)
    if not OmegaConf.has_resolver("ceil_product"):
        OmegaConf.register_new_resolver("ceil_product", _ceil_product)
