"""conf/retriever/*.yaml instantiate to the intended retrievers with the keys the pipeline reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ragforget.retrieval.bm25 import BM25Retriever
from ragforget.retrieval.closed_book import ClosedBookRetriever
from ragforget.retrieval.dense import DenseRetriever
from ragforget.retrieval.oracle import OracleRetriever

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "retriever"


@pytest.mark.parametrize(
    ("name", "cls", "top_k"),
    [("bm25", BM25Retriever, 3), ("dense", DenseRetriever, 3), ("oracle", OracleRetriever, 3),
     ("none", ClosedBookRetriever, 0)],
)
def test_retriever_config_instantiates(name: str, cls: type, top_k: int) -> None:
    cfg = compose_config([f"retriever={name}"]).retriever  # composed: impl may use ${paths.*}
    retriever = instantiate(cfg.impl)
    assert isinstance(retriever, cls)
    assert cfg.name == retriever.name == name
    assert cfg.top_k == top_k


def test_oracle_config_nests_bm25_distractors() -> None:
    retriever = instantiate(OmegaConf.load(CONF_DIR / "oracle.yaml").impl)
    assert isinstance(retriever.distractors, BM25Retriever)
    assert retriever.cache_params()["distractors"]["name"] == "bm25"


def test_closed_book_returns_nothing() -> None:
    assert ClosedBookRetriever().search(["a", "b"], 5) == [[], []]
