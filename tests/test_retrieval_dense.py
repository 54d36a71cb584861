"""Dense retrieval with the real packaged MiniLM (a few seconds on CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragforget.retrieval.dense import DenseRetriever

CORPUS = [
    {"id": "cat", "title": "Pets", "contents": "Pets\nThe feline dozed all afternoon on the living-room rug."},
    {"id": "stocks", "title": "Markets", "contents": "Markets\nShare prices tumbled on Monday after the bank report."},
    {"id": "pasta", "title": "Cooking", "contents": "Cooking\nBoil the spaghetti for nine minutes in salted water."},
    {"id": "rain", "title": "Weather", "contents": "Weather\nHeavy showers are expected across the region tomorrow."},
    {"id": "goal", "title": "Football", "contents": "Football\nThe striker scored in the final minute of the match."},
]


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory) -> DenseRetriever:
    dense = DenseRetriever(batch_size=8)
    dense.build_index(CORPUS, tmp_path_factory.mktemp("dense"))
    return dense


def test_dense_ranks_semantic_match_first_without_shared_words(retriever: DenseRetriever) -> None:
    hits = retriever.search(["where was the cat sleeping?", "will it be wet later?", "who won the soccer game"], k=2)
    assert [h[0][0] for h in hits] == ["cat", "rain", "goal"]
    assert all(h[0][1] > h[1][1] for h in hits)


def test_encode_returns_unit_vectors_of_minilm_size(retriever: DenseRetriever) -> None:
    vectors = retriever.encode(["a sentence", "another one"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_dense_index_round_trip(retriever: DenseRetriever, tmp_path: Path) -> None:
    retriever.build_index(CORPUS, tmp_path)
    loaded = DenseRetriever()
    loaded.load_index(tmp_path)
    loaded._model = retriever.model  # reuse the loaded encoder: the test is about the saved index
    assert loaded.search(["pasta recipe"], 5) == retriever.search(["pasta recipe"], 5)
