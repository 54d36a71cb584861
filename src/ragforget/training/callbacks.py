"""The Lightning callbacks and loggers a config adds to the Trainer (``conf/callbacks/``, ``conf/lightning_loggers/``).

Every entry of ``cfg.callbacks`` or ``cfg.lightning_loggers`` is instantiated from its ``_target_``, as in
lightning-hydra-template: ``+callbacks.early_stopping._target_=lightning.pytorch.callbacks.EarlyStopping``
adds a callback from the command line, ``callbacks.progress_bar=null`` drops one. The callbacks that
resuming and tracking depend on are built in code by ``training.train.fit``, not here.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from ragforget.errors import ConfigError
from ragforget.utils.instantiate import instantiate
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

# The config sections instantiated here, and the class each entry must build.
SECTIONS: dict[str, type] = {"callbacks": L.Callback, "lightning_loggers": Logger}


def configured(cfg: DictConfig, section: str) -> list[Any]:
    """The objects that ``cfg.<section>`` declares, in config order (null entries are switched off).

    A run folder saved before the section existed has none: ``cfg.get`` gives nothing to add.
    """
    kind = SECTIONS[section]
    built = []
    for name, entry in (cfg.get(section) or {}).items():
        if entry is None:
            continue
        obj = instantiate(entry)
        if not isinstance(obj, kind):
            raise ConfigError(f"{section}.{name}", f"builds a {type(obj).__name__}, not a {kind.__module__}."
                              f"{kind.__qualname__}", f"give a {kind.__qualname__} class as _target_")
        log.info("%s.%s: %s", section, name, type(obj).__name__)
        built.append(obj)
    return built


def configured_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """``cfg.callbacks`` instantiated (an early stopping, a progress bar): what the Trainer gets besides its own."""
    return configured(cfg, "callbacks")


def configured_loggers(cfg: DictConfig) -> list[Logger]:
    """``cfg.lightning_loggers`` instantiated; the job's MLflow run is logged by its own callback, not one of these."""
    return configured(cfg, "lightning_loggers")
