"""``retriever=invar``: the causal LM with its retriever adapter as a bi-encoder over a faiss index.

Without ``adapter`` the adapter is trained first (Invar-RAG stage 1, cached); with a folder or an
MLflow artifact URI (``runs:/<run id>/retriever_adapter``) a finished stage 1 is reused. The index is
cached per (model, adapter hash, pooling and prefixes, corpus hash), like every other index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from omegaconf import DictConfig

from ragforget.errors import ConfigError, DataError
from ragforget.invar.adapter import ADAPTER_WEIGHTS, PROVENANCE_FILE, adapter_hash
from ragforget.invar.encoder import LLMEncoder
from ragforget.invar.pooling import POOLINGS
from ragforget.invar.stage1 import train_retriever_adapter
from ragforget.models.loading import load_model, load_tokenizer
from ragforget.retrieval.base import RetrieverContext
from ragforget.retrieval.dense import FlatIndexRetriever
from ragforget.utils.config import plain
from ragforget.utils.device import check_device
from ragforget.utils.hashing import package_versions, stable_hash
from ragforget.utils.instantiate import instantiate
from ragforget.utils.io import atomic_path, cache_lock, read_json
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

KEY = "retriever.impl"
class InvarRetriever(FlatIndexRetriever):
    """Queries and passages embedded by the LLM with its retriever LoRA adapter."""

    name: ClassVar[str] = "invar"

    def __init__(self, model: Mapping[str, Any] | DictConfig, adapter: str | None = None,
                 pooling: str = "last", max_length: int = 128, batch_size: int = 32,
                 query_prefix: str = "Query: ", passage_prefix: str = "Passage: ", device: str = "auto",
                 stage1: Mapping[str, Any] | DictConfig | None = None) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"{KEY}.pooling", f"unknown pooling {pooling!r}", f"choose one of {list(POOLINGS)}")
        self.model_config: dict[str, Any] = plain(model)
        self.adapter = adapter
        self.encoder_settings = {"pooling": pooling, "max_length": int(max_length),
                                 "query_prefix": query_prefix, "passage_prefix": passage_prefix}
        self.batch_size = int(batch_size)
        self.device = check_device(device)
        self.stage1: dict[str, Any] = plain(stage1) or {}
        self.adapter_dir: Path | None = None
        self.cache_dir: Path | None = None
        self._encoder: LLMEncoder | None = None

    def model_identity(self) -> dict[str, Any]:
        return {key: self.model_config.get(key) for key in ("source", "dtype")}

    def prepare(self, context: RetrieverContext) -> None:
        """Find the adapter (a path or an MLflow URI), or train it (stage 1); record where it came from."""
        self.cache_dir = Path(context.assets.cache_dir)
        if self.adapter is None:
            self.adapter_dir = train_retriever_adapter(self, context)
        elif str(self.adapter).startswith(("runs:/", "mlflow-artifacts:/", "models:/")):
            import mlflow.artifacts

            target = self.cache_dir / "invar" / "downloaded" / stable_hash(str(self.adapter))
            with cache_lock(target):  # parallel jobs download it once
                if not target.exists():
                    with atomic_path(target) as tmp:
                        tmp.mkdir()
                        mlflow.artifacts.download_artifacts(artifact_uri=str(self.adapter), dst_path=str(tmp),
                                                            tracking_uri=context.cfg.logger.tracking_uri)
            found = sorted(target.rglob(ADAPTER_WEIGHTS))
            if not found:
                raise DataError(self.adapter, None, "no retriever adapter in these artifacts")
            self.adapter_dir = found[0].parent
        else:
            self.adapter_dir = Path(str(self.adapter)).expanduser().resolve()
        provenance_file = self.adapter_dir / PROVENANCE_FILE
        provenance = read_json(provenance_file) if provenance_file.exists() else {}
        if provenance.get("run_id"):
            context.tags["retriever_run_id"] = str(provenance["run_id"])
        context.artifacts["retriever_adapter"] = self.adapter_dir
        log.info("invar retriever adapter: %s", self.adapter_dir)

    def cache_params(self) -> dict[str, Any]:
        if self.adapter_dir is None:
            raise RuntimeError("InvarRetriever.prepare must run before its index is built or loaded")
        return {"model": self.model_identity(), "adapter": adapter_hash(self.adapter_dir), **self.encoder_settings,
                "libraries": package_versions("torch", "transformers", "peft")}

    @property
    def encoder(self) -> LLMEncoder:
        """The LLM with the retriever adapter, loaded at the first encoding (cached results skip it)."""
        if self._encoder is None:
            from peft import PeftModel

            if self.adapter_dir is None or self.cache_dir is None:
                raise RuntimeError("InvarRetriever.prepare must run before it encodes")
            path = instantiate(self.model_config["source"]).materialize(self.cache_dir)
            model = load_model(path, str(self.model_config.get("dtype", "bfloat16")), self.device)
            model = PeftModel.from_pretrained(  # type: ignore[assignment]
                model, str(self.adapter_dir), torch_device=str(model.device))
            self._encoder = LLMEncoder(model, load_tokenizer(path), **self.encoder_settings)  # type: ignore[arg-type]
        return self._encoder

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(texts, "passage", self.batch_size, desc="invar passages").numpy()

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(texts, "query", self.batch_size, desc="invar queries").numpy()
