"""The contracts of what config builds to be fetched into the cache: ``materialize(cache_dir)``.

Hydra builds a source from its config group (``model.source``, ``dataset.qa``, ``dataset.corpus``,
``general_data``). A source does nothing until asked; ``materialize`` then writes what it stands for
into the cache once (under a lock, atomically), returns where it is, and finds it there on later calls.
Every kind shares that shape (:class:`AssetSource`) and narrows what it returns:

- :class:`ModelSource` (``models.sources``): a folder ``from_pretrained`` reads;
- :class:`QASource` (``data.hub``, ``data.squad``): split name -> QA records file;
- :class:`CorpusSource` (``data.corpus``): the corpus file, and the held-out summaries beside it;
- ``data.general.GeneralDataSource``: the general-data file (a base class, as the methods that take
  one check what they were given).

Declared here, below the layers that implement and consume them, so the prepare stage, retrievers
and methods name the same types without importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)


class AssetSource(Protocol[T_co]):
    """Anything that writes itself into the cache on demand and says where it is."""

    def materialize(self, cache_dir: Path) -> T_co:
        """Build or fetch the asset under ``cache_dir`` unless it is there already; return its location."""
        ...


class ModelSource(AssetSource[str], Protocol):
    """``model.source``: ``materialize`` returns a local snapshot folder (weights, config, tokenizer).

    A source read from the Hub also has ``resolved_revision``, the commit it used, once materialized.
    """


class QASource(AssetSource[dict[str, Path]], Protocol):
    """``dataset.qa``: ``materialize`` returns each split's records file ({id, question, golden_answers})."""


class CorpusSource(AssetSource[Path], Protocol):
    """``dataset.corpus``: ``materialize`` returns the corpus file ({id, contents} per line)."""

    def heldout_summaries_path(self, cache_dir: Path) -> Path:
        """Wikipedia summaries kept out of the corpus ({id, title, text}), for the retention suite."""
        ...
