"""``hydra.utils.instantiate`` that lets our own errors through unwrapped, named by their full config key.

Hydra wraps whatever a constructor raises in an InstantiationException whose message starts with
its own call details; a user should read ours first: the config key, the problem, what to do.

A part's constructor knows only its own parameter names, so it raises a *relative* ConfigError
(``weight``, see ``ragforget.errors.ConfigError``). Where the node is instantiated its full key is
known, and goes in front: ``method.terms.selfaug.weight``. Hydra builds nested nodes first (a
transform's ``source``) and names the node whose constructor raised at the end of its message
(``full_key: method.transforms.self_synth.source``); that node is the one the key goes under. When
Hydra names none (or something outside the config), the config's own key is used. A config without
a place in a tree (a plain mapping, or a sub-config a part instantiates itself) leaves the key
relative to it, for whoever instantiated the enclosing node.
"""

from __future__ import annotations

from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from ragforget.errors import ConfigError, RagforgetError

# How Hydra (1.2 and later) ends an InstantiationException's message when it knows the failing node.
FULL_KEY_LINE = "\nfull_key: "


def instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(config, ...)``; our errors come out as they are, relative keys made full."""
    try:
        return hydra.utils.instantiate(config, *args, **kwargs)
    except InstantiationException as exc:
        error = _own_error(exc)
        if error is None:
            raise
        if isinstance(error, ConfigError):
            error = _keyed(error, exc, config)
        raise error from None


def node_key(config: Any) -> str:
    """The full key of a config node in its tree (``method.terms.selfaug``); empty when it has no place
    (a root, a plain mapping, or a node detached from its tree as Hydra hands sub-configs to a part)."""
    return _hydra_name(config) if _placed(config) else ""


def _keyed(error: ConfigError, exc: InstantiationException, config: Any) -> ConfigError:
    """``error`` with its relative key under the node whose constructor raised.

    Hydra names that node by its full key; a node without a place in a tree (see ``node_key``) is named
    from its own key on, so there the key is made relative to ``config`` and stays relative: whoever
    instantiated the enclosing node knows where ``config`` sits.
    """
    own = _hydra_name(config)
    _, found, named = str(exc).rpartition(FULL_KEY_LINE)
    named = named.strip() if found else ""
    if not named or not (not own or named == own or named.startswith(f"{own}.")):
        named = own  # Hydra named no node, or one outside config: the config's own
    if _placed(config):
        return error.under(named)
    return error.under(named[len(own):].lstrip(".") if own else named, relative=True)


def _hydra_name(config: Any) -> str:
    return str(config._get_full_key(None)) if OmegaConf.is_config(config) else ""


def _placed(config: Any) -> bool:
    return OmegaConf.is_config(config) and config._get_parent() is not None


def _own_error(exc: BaseException) -> RagforgetError | None:
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, RagforgetError):
            return cause
        cause = cause.__cause__
    return None
