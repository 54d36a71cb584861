"""The Method a method config describes, its parts built from the nodes where the user sets them.

A method config (``conf/method/*.yaml``, composed under ``method``) holds its parts directly, each
part's arguments written once::

    name: selfaug
    terms:                      # loss terms, keyed by name
      selfaug: {_target_: ragforget.methods.selfaug.InputKL, weight: 0.5, direction: forward}
    transforms: {}              # data transforms, keyed by name, applied in config order
    optimizer: null             # a ``_partial_: true`` optimizer factory (AdamW when absent)
    posthoc: null               # a post-hoc weight transform
    trains: true                # false: evaluate the starting model as it is

Methods compose by merging their configs (``method=[selfaug,replay]``): parts are keyed by name.
A bad value is named by its full key (``method.terms.selfaug.weight``), see ``utils.instantiate``.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from ragforget.errors import keys_under, require
from ragforget.methods.base import Method
from ragforget.utils.instantiate import instantiate, node_key

METHOD_KEYS = ("name", "terms", "transforms", "optimizer", "posthoc", "trains")


def build_method(node: DictConfig) -> Method:
    """Instantiate every part of the method config ``node`` (e.g. ``cfg.method``) and bundle them."""
    key = node_key(node)  # "method"; empty for a node without a place, whose keys then stay relative
    with keys_under(key, relative=not key):
        unknown = sorted(str(key) for key in node if key not in METHOD_KEYS)
        require(not unknown, unknown[0] if unknown else "", "is not a setting of a method config",
                f"a method config holds {', '.join(METHOD_KEYS)}; a part's settings go inside the part",
                relative=True)
        trains = node.get("trains", True)
        require(isinstance(trains, bool), "trains", f"must be true or false, got {trains!r}", relative=True)
        return Method(name=str(node.name), terms=_parts(node.get("terms")),
                      transforms=_parts(node.get("transforms")), optimizer=_part(node.get("optimizer")),
                      posthoc=_part(node.get("posthoc")), trains=trains, config_key=key)


def _parts(group: DictConfig | None) -> dict[str, Any]:
    """Each named part of a group (``terms``, ``transforms``), in config order."""
    return {str(name): instantiate(group[name]) for name in group} if group else {}


def _part(part: DictConfig | None) -> Any:
    return None if part is None else instantiate(part)
