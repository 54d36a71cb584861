"""The stages in order: prepare -> retrieve -> train -> checkpoint -> evaluate -> MLflow.

``run_job`` is what ``run.py`` calls for every Hydra job (one MLflow run per job).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

import ragforget
from ragforget.assets.prepare import PreparedAssets, prepare_assets
from ragforget.data.rag_examples import RagExample, build_examples
from ragforget.data.records import corpus_fingerprint, load_corpus, load_qa
from ragforget.errors import ConfigError
from ragforget.evaluation.evaluate import evaluate_model, shift_metric, with_deltas
from ragforget.methods.base import Method
from ragforget.models.loading import has_adapters, load_model, load_tokenizer
from ragforget.retrieval.stage import build_retriever, retrieval_recall, retrieve
from ragforget.tracking.mlflow_run import TrackedRun, flatten, git_commit
from ragforget.training.checkpoint import load_checkpoint_folder, save_checkpoint_folder
from ragforget.training.train import build_trainable_model, fit
from ragforget.utils.hashing import stable_hash
from ragforget.utils.io import read_json, write_json
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

STAGES = ("all", "prepare", "evaluate")
RUN_ID_FILE = "mlflow_run_id.txt"


def seeded_subset(records: Sequence[Mapping[str, Any]], size: int | None, seed: int) -> list[dict[str, Any]]:
    """A reproducible sample of ``size`` records in their original order (all if size is None)."""
    records = [dict(r) for r in records]
    if size is None or size >= len(records):
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), size))
    return [records[i] for i in keep]


def start_tracking(cfg: DictConfig, workdir: Path) -> TrackedRun:
    """Open this job's MLflow run: a new one, or the one recorded in ``workdir`` when resuming."""
    run = TrackedRun(cfg.logger.tracking_uri, cfg.logger.experiment_name,
                     str(Path(cfg.logger.artifact_location).resolve()))
    id_file = workdir / RUN_ID_FILE
    previous = id_file.read_text().strip() if id_file.exists() else None
    tags = {"method": cfg.method.name, "model": cfg.model.name, "dataset": cfg.dataset.name,
            "retriever": cfg.retriever.name, "seed": str(cfg.seed), "stage": cfg.stage,
            "git_commit": git_commit(Path(__file__).parent), "ragforget_version": ragforget.__version__}
    run.start(cfg.run_name, tags, run_id=previous)
    id_file.write_text(str(run.run_id))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    run.log_params(flatten(resolved))
    return run


class Job:
    """One configured job; each method below is one stage and reads what earlier stages left."""

    def __init__(self, cfg: DictConfig, workdir: Path) -> None:
        if cfg.stage not in STAGES:
            raise ConfigError("stage", f"unknown stage '{cfg.stage}'", f"choose one of {list(STAGES)}")
        self.cfg = cfg
        self.workdir = workdir
        self.assets: PreparedAssets | None = None
        self.retrieved: dict[str, dict[str, list[str]]] = {}
        self.base_eval_dir: Path | None = None

    def examples(self, split: str, records: list[dict[str, Any]], tokenizer: Any) -> list[RagExample]:
        """Retrieve passages for ``records`` of ``split`` (cached) and build their prompts."""
        assets = self.assets
        assert assets is not None
        self.retrieved[split] = retrieve(self.cfg, self.retriever, records, split, assets.splits[split],
                                         assets.corpus_path, assets.cache_dir, self.corpus_hash)
        prompt = hydra.utils.instantiate(self.cfg.prompt)
        return build_examples(records, self.retrieved[split], self.corpus_by_id, prompt, tokenizer)

    def eval_examples(self, tokenizer: Any) -> tuple[list[RagExample], dict[str, float]]:
        """Prompts for the fixed evaluation questions (same for every run), and retrieval recall."""
        cfg, assets = self.cfg, self.assets
        assert assets is not None
        split = cfg.dataset.eval_split
        records = seeded_subset(load_qa(assets.splits[split]), cfg.eval.odqa.max_questions, cfg.eval.odqa.seed)
        examples = self.examples(split, records, tokenizer)
        return examples, retrieval_recall(self.retrieved[split], records, self.corpus_by_id)

    def train_examples(self, tokenizer: Any) -> list[RagExample]:
        """Prompts for a seeded subset of the training split."""
        cfg, assets = self.cfg, self.assets
        assert assets is not None
        split = cfg.dataset.train_split
        if split is None or split not in assets.splits:
            raise ConfigError("dataset.train_split", f"dataset '{cfg.dataset.name}' has no training split",
                              "use it for evaluation with method=base, or pick another dataset")
        records = seeded_subset(load_qa(assets.splits[split]), cfg.train.max_examples, cfg.seed)
        return self.examples(split, records, tokenizer)

    def base_metrics(self, examples: list[RagExample]) -> dict[str, float]:
        """The starting model's metrics, cached per (model, data, retrieval, prompt, eval config)."""
        cfg, assets = self.cfg, self.assets
        assert assets is not None
        key = stable_hash({
            "version": ragforget.__version__,
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "eval": OmegaConf.to_container(cfg.eval, resolve=True),
            "prompt": OmegaConf.to_container(cfg.prompt, resolve=True),
            "questions": [(ex.id, ex.doc_ids) for ex in examples],
        })
        path = assets.cache_dir / "base_eval" / key / "metrics.json"
        self.base_eval_dir = path.parent
        if path.exists():
            log.info("reusing cached base-model evaluation %s", path.parent)
            return dict(read_json(path))
        log.info("evaluating the base model once for this eval config (cached in %s)", path.parent)
        model = load_model(assets.model_path, cfg.model.dtype)
        tokenizer = load_tokenizer(assets.model_path)
        metrics = evaluate_model(model, tokenizer, cfg, examples, assets, out_dir=path.parent)
        write_json(path, metrics)
        return metrics

    def prepare(self) -> PreparedAssets:
        """Stage 1: assets in the cache, the retriever and the corpus (needed by every later stage)."""
        self.assets = prepare_assets(self.cfg)
        self.retriever = build_retriever(self.cfg)
        self.corpus_by_id = {p["id"]: p for p in load_corpus(self.assets.corpus_path)}
        self.corpus_hash = corpus_fingerprint(self.assets.corpus_path)
        return self.assets

    def run(self, tracked: TrackedRun) -> dict[str, Any]:
        cfg = self.cfg
        assets = self.prepare()
        if cfg.stage == "prepare":
            return {}
        tokenizer = load_tokenizer(assets.model_path)
        examples, recall = self.eval_examples(tokenizer)
        tracked.log_metrics({f"retrieval/{k}": v for k, v in recall.items()})

        method: Method = hydra.utils.instantiate(cfg.method.impl)
        checkpoint = Path(cfg.checkpoint) if cfg.stage == "evaluate" else self.workdir / "checkpoint"
        timings: dict[str, float] = {}
        if cfg.stage == "all" and not checkpoint.exists():
            trained = None
            if method.trains:
                L.seed_everything(cfg.seed, workers=True)
                start = time.perf_counter()
                model = build_trainable_model(cfg, assets.model_path)
                trained = fit(cfg, model, tokenizer, method, self.train_examples(tokenizer), self.workdir, tracked)
                timings["time/train_s"] = time.perf_counter() - start
            save_checkpoint_folder(checkpoint, trained, tokenizer, cfg)

        base = self.base_metrics(examples)
        model, tokenizer, _ = load_checkpoint_folder(checkpoint, assets.cache_dir)
        if (checkpoint / "adapter").exists() or (checkpoint / "model").exists():
            eval_dir = self.workdir / "eval"
            metrics = evaluate_model(model, tokenizer, cfg, examples, assets, out_dir=eval_dir)
            base_model = None if has_adapters(model) else load_model(assets.model_path, cfg.model.dtype)
            metrics.update(shift_metric(model, tokenizer, cfg, assets, base_model=base_model))
        else:  # the starting model itself: its (cached) evaluation is this run's
            metrics = dict(base)
            eval_dir = self.base_eval_dir
        metrics = with_deltas({**metrics, **timings, **{f"retrieval/{k}": v for k, v in recall.items()}}, base)
        tracked.log_metrics(metrics)
        write_json(self.workdir / "metrics.json", metrics)
        for path, name in ((eval_dir, "eval"), (checkpoint, "checkpoint")):
            tracked.log_artifact(path, name)
        return metrics


def run_job(cfg: DictConfig, workdir: Path) -> dict[str, Any]:
    """Run one job end to end inside its own MLflow run; a failure marks the run FAILED with the error."""
    workdir = Path(cfg.resume_dir or workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, workdir / "config.yaml", resolve=True)
    tracked = start_tracking(cfg, workdir)
    tracked.log_artifact(workdir / "config.yaml")
    try:
        metrics = Job(cfg, workdir).run(tracked)
    except BaseException as exc:
        tracked.finish("FAILED", error=f"{type(exc).__name__}: {exc}")
        raise
    tracked.finish("FINISHED")
    return metrics
