"""Invar-RAG stage 1: train the retriever adapter on the training split, once per setting (cached).

Training questions get their gold passage and BM25-mined hard negatives; the loss is InfoNCE with
in-batch negatives + alignment to MiniLM + invariance across query/passage variants (every weight
in ``retriever.impl.stage1``; a weight of 0 switches its term off).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader

from ragforget.data.records import load_qa, seeded_subset
from ragforget.errors import ConfigError
from ragforget.invar.adapter import PROVENANCE_FILE, adapter_hash
from ragforget.invar.data import retrieval_examples
from ragforget.invar.encoder import LLMEncoder
from ragforget.invar.module import InvarWeights, RetrieverFineTuner, Teacher
from ragforget.models.loading import attach_lora, load_model, load_tokenizer
from ragforget.retrieval.base import RetrieverContext
from ragforget.retrieval.cache import retrieve_split
from ragforget.tracking.curves import MlflowCurves
from ragforget.utils.hashing import code_and_versions, sha256_file, stable_hash
from ragforget.utils.instantiate import instantiate
from ragforget.utils.io import atomic_path, cache_lock, write_json
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

KEY = "retriever.impl.stage1"


class AdapterSpec(Protocol):
    """What stage 1 reads from the retriever it trains the adapter for (``invar.retriever.InvarRetriever``).

    Declared here so the retriever imports stage 1 and stage 1 never imports the retriever.
    """

    model_config: dict[str, Any]      # retriever.impl.model: source, dtype, lora
    encoder_settings: dict[str, Any]  # pooling, max_length, query and passage prefixes
    stage1: dict[str, Any]            # retriever.impl.stage1

    def model_identity(self) -> dict[str, Any]:
        """What identifies the model in cache keys."""
        ...


def minilm_teacher(cache_dir: Path) -> Teacher:
    """MiniLM (the packaged dense retriever's encoder) scores: cosine of normalized embeddings."""
    from ragforget.retrieval.dense import DenseRetriever

    dense = DenseRetriever(cache_dir=str(cache_dir))

    def scores(queries: Any, passages: Any) -> torch.Tensor:
        return torch.from_numpy(dense.encode(list(queries)) @ dense.encode(list(passages)).T)

    return scores


def train_retriever_adapter(retriever: AdapterSpec, context: RetrieverContext) -> Path:
    """The trained adapter folder: reused from the cache when this exact stage 1 ran before."""
    cfg, assets = context.cfg, context.assets
    settings = retriever.stage1
    split = cfg.dataset.train_split
    if split is None or split not in assets.splits:
        raise ConfigError("dataset.train_split", f"dataset '{cfg.dataset.name}' has no training split",
                          "retriever=invar trains on it: give an adapter with retriever.impl.adapter=<folder>")
    key = stable_hash({**code_and_versions("ragforget.invar", "ragforget.models"), "model": retriever.model_identity(),
                       "lora": retriever.model_config.get("lora"), "encoder": retriever.encoder_settings,
                       "stage1": settings, "split": sha256_file(assets.splits[split]),
                       "corpus": context.corpus_hash, "seed": cfg.seed})
    folder = Path(assets.cache_dir) / "invar" / "adapters" / key
    with cache_lock(folder):  # parallel jobs train it once
        if (folder / "adapter_config.json").exists():
            log.info("invar stage 1: reusing the trained retriever adapter %s", folder)
        else:
            _train_adapter(retriever, context, key, folder)
    return folder


def _train_adapter(retriever: AdapterSpec, context: RetrieverContext, key: str, folder: Path) -> None:
    cfg, assets = context.cfg, context.assets
    settings = retriever.stage1
    split = cfg.dataset.train_split
    records = seeded_subset(load_qa(assets.splits[split]), settings["max_examples"], cfg.seed)
    miner = instantiate(settings["miner"])
    n_negatives = int(settings["negatives"])
    rows = retrieve_split(miner, records, n_negatives + int(settings["mining_depth"]), assets.corpus_path,
                          assets.cache_dir,
                          split_key=f"{cfg.dataset.name}-{split}-invar-{stable_hash([r['id'] for r in records])}",
                          corpus_hash=context.corpus_hash)
    hits = {row["id"]: list(zip(row["doc_ids"], row["scores"])) for row in rows}
    examples = retrieval_examples(records, hits, context.corpus_by_id, n_negatives)
    if not examples:
        raise ConfigError(f"{KEY}.negatives", f"no training question has a positive and {n_negatives} hard negatives",
                          f"lower {KEY}.negatives or raise {KEY}.mining_depth")
    log.info("invar stage 1: %d of %d questions with a positive and %d hard negatives", len(examples),
             len(records), n_negatives)

    model = attach_lora(load_model(assets.model_path, str(retriever.model_config.get("dtype", "bfloat16"))),
                        retriever.model_config["lora"])
    encoder = LLMEncoder(model, load_tokenizer(assets.model_path), **retriever.encoder_settings)
    weights = InvarWeights(**{name: float(settings[name]) for name in ("tau", "align", "teacher_tau", "invariance")})
    variants = [instantiate(v) for v in (settings.get("variants") or {}).values() if v is not None]
    teacher = minilm_teacher(Path(assets.cache_dir)) if weights.align > 0 else None
    module = RetrieverFineTuner(encoder, weights, variants, teacher, lr=float(settings["lr"]), seed=cfg.seed)
    loader: DataLoader[Any] = DataLoader(examples,  # type: ignore[arg-type]  # a list is a dataset
                                         batch_size=int(settings["batch_size"]), shuffle=True, collate_fn=list,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    callbacks = [MlflowCurves(context.run, cfg.logger.log_every_n_steps, prefix="retriever/")] if context.run else []
    trainer = instantiate(cfg.trainer, max_steps=int(settings["max_steps"]), logger=False,
                          enable_checkpointing=False, callbacks=callbacks, default_root_dir=str(folder.parent))
    start = time.perf_counter()
    trainer.fit(module, loader)
    seconds = time.perf_counter() - start
    context.metrics.update({"time/retriever_train_s": seconds,
                            "time/retriever_step_s": seconds / max(trainer.global_step, 1)})
    with atomic_path(folder) as tmp:
        model.save_pretrained(str(tmp))
        # The hash at save time lets anyone check later that stage 2 left the adapter untouched.
        write_json(tmp / PROVENANCE_FILE, {"run_id": getattr(context.run, "run_id", None), "key": key,
                                             "adapter_hash": adapter_hash(tmp),
                                             "examples": len(examples), "steps": trainer.global_step,
                                             "train_s": seconds, "stage1": settings})
