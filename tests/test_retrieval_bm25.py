"""BM25: lexical ranking, save/load round trip, and edge cases (empty queries, k beyond the corpus)."""

from __future__ import annotations

from pathlib import Path

from ragforget.retrieval.bm25 import BM25Retriever

CORPUS = [
    {"id": "astro", "title": "Astronomy", "contents": "Astronomy\nJupiter is the largest planet of the solar system."},
    {"id": "bake", "title": "Baking", "contents": "Baking\nSourdough bread rises slowly with wild yeast."},
    {"id": "chess", "title": "Chess", "contents": "Chess\nThe Sicilian defence is a popular chess opening."},
    {"id": "dance", "title": "Dance", "contents": "Dance\nThe tango originated in Buenos Aires."},
    {"id": "eel", "title": "Eels", "contents": "Eels\nEuropean eels migrate to the Sargasso Sea to spawn."},
    {"id": "fern", "title": "Ferns", "contents": "Ferns\nFerns reproduce with spores instead of seeds."},
    {"id": "glass", "title": "Glass", "contents": "Glass\nGlass is made by melting sand at high temperature."},
    {"id": "honey", "title": "Honey", "contents": "Honey\nBees make honey from flower nectar."},
    {"id": "ice", "title": "Ice", "contents": "Ice\nIce floats because it is less dense than water."},
    {"id": "jazz", "title": "Jazz", "contents": "Jazz\nJazz grew out of New Orleans music traditions."},
]


def test_bm25_ranks_passage_with_query_words_first(tmp_path: Path) -> None:
    retriever = BM25Retriever()
    retriever.build_index(CORPUS, tmp_path)
    hits = retriever.search(["Which opening is the Sicilian defence?", "why does ice float on water"], k=3)
    assert [len(h) for h in hits] == [3, 3]
    assert hits[0][0][0] == "chess"
    assert hits[1][0][0] == "ice"
    scores = [score for _, score in hits[0]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0


def test_bm25_load_gives_same_results(tmp_path: Path) -> None:
    BM25Retriever(k1=1.2, b=0.5).build_index(CORPUS, tmp_path)
    loaded = BM25Retriever(k1=1.2, b=0.5)
    loaded.load_index(tmp_path)
    fresh = BM25Retriever(k1=1.2, b=0.5)
    fresh.build_index(CORPUS, tmp_path / "again")
    query = ["bees nectar honey"]
    assert loaded.search(query, 4) == fresh.search(query, 4)


def test_bm25_edge_cases(tmp_path: Path) -> None:
    retriever = BM25Retriever()
    retriever.build_index(CORPUS, tmp_path)
    # Only stopwords / unknown words: zero-score hits rather than a crash, still k of them.
    empty, unknown = retriever.search(["the of and", "xylophone"], k=2)
    assert [score for _, score in empty] == [0.0, 0.0] and len(unknown) == 2
    assert len(retriever.search(["jazz"], k=50)[0]) == len(CORPUS)  # k capped at the corpus size
    assert retriever.search(["jazz"], k=0) == [[]]
