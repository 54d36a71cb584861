"""Resuming an interrupted run from its folder: with the config it was started with, never another.

``python run.py resume_dir=<run folder>`` composes the default config first (Hydra always does); the
run itself must continue with the config saved in its folder. Overrides given beside ``resume_dir``
are accepted only where they leave that config unchanged, so a typo cannot turn a selfaug run into an
sft one under the same MLflow run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ragforget.errors import ConfigError
from ragforget.tracking.mlflow_run import flatten

# Where a run reads and runs, not what it computes: these may differ on resume.
LOCATION_KEYS = ("resume_dir", "device", "paths.cache_dir")


def resumed_config(composed: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The run folder's saved config, with ``resume_dir`` and the location keys given in ``overrides``.

    Raises ConfigError when the folder holds no run, or when ``overrides`` other than the location
    keys would change the saved config (listing the keys that differ).
    """
    folder = Path(composed.resume_dir)
    saved_file = folder / "config.yaml"
    if not saved_file.is_file():
        raise ConfigError("resume_dir", f"{folder} holds no config.yaml, so it is not a run folder",
                          "pass the output folder of an interrupted run, e.g. outputs/runs/<run>/<time>")
    saved = OmegaConf.load(saved_file)
    assert isinstance(saved, DictConfig)
    given = {override.split("=", 1)[0].lstrip("+~"): override for override in overrides}
    typed = [override for key, override in given.items() if key not in LOCATION_KEYS]
    if typed:
        differing = _differing_keys(composed, saved)
        if differing:
            shown = ", ".join(differing[:12]) + (f" and {len(differing) - 12} more" if len(differing) > 12 else "")
            raise ConfigError("resume_dir", f"the overrides {typed} change the run saved in {saved_file}: {shown}",
                              "resume with resume_dir=<folder> alone (it continues with the saved config), "
                              "or start a new run to change settings")
    for key in LOCATION_KEYS:
        if key == "resume_dir" or key in given:  # otherwise the run keeps where it read and ran
            OmegaConf.update(saved, key, OmegaConf.select(composed, key), force_add=True)
    return saved


def _differing_keys(composed: DictConfig, saved: DictConfig) -> list[str]:
    ours = flatten(OmegaConf.to_container(composed, resolve=True))  # type: ignore[arg-type]
    theirs = flatten(OmegaConf.to_container(saved, resolve=True))  # type: ignore[arg-type]
    keys = (set(ours) | set(theirs)) - set(LOCATION_KEYS)
    return sorted(k for k in keys if ours.get(k) != theirs.get(k))
