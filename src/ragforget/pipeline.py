"""The stages in order: prepare -> retrieve -> train -> checkpoint -> evaluate [-> post-hoc variants] -> MLflow.

``run_job`` is what ``run.py`` calls for every Hydra job (one MLflow run per job).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

import ragforget
from ragforget.assets.cache import resolve_cache_dir
from ragforget.assets.prepare import PreparedAssets, prepare_assets
from ragforget.data.rag_examples import RagExample, as_training_example, build_examples
from ragforget.data.records import corpus_fingerprint, load_corpus, load_qa, seeded_subset
from ragforget.errors import ConfigError
from ragforget.evaluation.during_training import ForgettingCurves
from ragforget.evaluation.evaluate import evaluate_model, paired_deltas, shift_metric, with_deltas
from ragforget.evaluation.statistics import ItemScores, read_item_scores
from ragforget.methods.base import Method, MethodContext, PosthocTransform
from ragforget.models.loading import has_adapters, load_model, load_tokenizer, starting_model_key
from ragforget.retrieval.base import RetrieverContext
from ragforget.retrieval.metrics import recall_table
from ragforget.retrieval.stage import RECALL_KS, build_retriever, check_top_k, retrieval_recall, retrieve
from ragforget.tracking.mlflow_run import TrackedRun, flatten, git_commit
from ragforget.tracking.status import terminal_status
from ragforget.tracking.sweep import objective_value
from ragforget.training.checkpoint import load_checkpoint_folder, save_checkpoint_folder
from ragforget.training.distributed import global_rank
from ragforget.training.train import build_trainable_model, fit
from ragforget.utils.device import check_device, release_memory, resolve_device
from ragforget.utils.hashing import MODEL_LIBRARIES, code_and_versions, stable_hash, stat_fingerprint
from ragforget.utils.instantiate import instantiate
from ragforget.utils.io import atomic_path, cache_lock, read_json, remove_stale_temps, write_json
from ragforget.utils.logging import get_logger
from ragforget.validation import validate_config

log = get_logger(__name__)

RUN_ID_FILE = "mlflow_run_id.txt"


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """What identifies a run in MLflow searches (the report stage selects runs by these)."""
    return {"method": cfg.method.name, "model": cfg.model.name, "dataset": cfg.dataset.name,
            "retriever": cfg.retriever.name, "seed": str(cfg.seed), "stage": cfg.stage,
            "git_commit": git_commit(Path(__file__).parent), "ragforget_version": ragforget.__version__}


def start_tracking(cfg: DictConfig, workdir: Path, run_name: str | None = None,
                   extra_tags: Mapping[str, str] | None = None, extra_params: Mapping[str, Any] | None = None,
                   id_file_name: str = RUN_ID_FILE) -> TrackedRun:
    """Open an MLflow run for this job: a new one, or the one recorded in ``workdir`` when resuming."""
    run = TrackedRun(cfg.logger.tracking_uri, cfg.logger.experiment_name,
                     str(Path(cfg.logger.artifact_location).resolve()))
    id_file = workdir / id_file_name
    previous = id_file.read_text().strip() if id_file.exists() else None
    run.start(run_name or cfg.run_name, {**run_tags(cfg), **(extra_tags or {})}, run_id=previous)
    id_file.write_text(str(run.run_id))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    run.log_params({**flatten(resolved), **(extra_params or {})})
    return run


# Eval settings that never change the base model's numbers: the paired deltas are computed after the
# base evaluation, the forgetting curves during training.
BASE_EVAL_INDEPENDENT = ("paired", "during_training")


def base_eval_key(cfg: DictConfig, examples: Sequence[RagExample], assets: PreparedAssets) -> str:
    """What the starting model's metrics depend on: its weights, every prompt (question and passage
    text) and gold answer, the retention suite's content, the eval settings, our evaluation code and
    the library versions."""
    eval_settings = OmegaConf.to_container(cfg.eval, resolve=True)
    assert isinstance(eval_settings, dict)
    return stable_hash({
        **code_and_versions("ragforget.evaluation", "ragforget.models", "ragforget.data",
                            libraries=(*MODEL_LIBRARIES, "lm_eval")),
        "model": starting_model_key(cfg.model),
        "weights": stat_fingerprint(assets.model_path),
        "eval": {key: value for key, value in eval_settings.items() if key not in BASE_EVAL_INDEPENDENT},
        "prompt": OmegaConf.to_container(cfg.prompt, resolve=True),
        "questions": [(ex.id, ex.messages, ex.golden_answers, ex.doc_ids) for ex in examples],
        "retention": assets.retention.content_key(),
    })


class Job:
    """One configured job; each method below is one stage and reads what earlier stages left."""

    def __init__(self, cfg: DictConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.device = resolve_device(check_device(cfg.device))  # every inference pass runs here
        self.assets: PreparedAssets | None = None
        self.retrieved: dict[str, dict[str, list[str]]] = {}
        self.base_eval_dir: Path | None = None
        self.base_items: dict[str, ItemScores] = {}
        self.base_eval_cost: dict[str, float] = {}

    def examples(self, split: str, records: list[dict[str, Any]], tokenizer: Any) -> list[RagExample]:
        """Retrieve passages for ``records`` of ``split`` (cached) and build their prompts."""
        assets = self.assets
        assert assets is not None
        self.retrieved[split] = retrieve(self.cfg, self.retriever, records, split, assets.splits[split],
                                         assets.corpus_path, assets.cache_dir, self.corpus_hash)
        prompt = instantiate(self.cfg.prompt)
        return build_examples(records, self.retrieved[split], self.corpus_by_id, prompt, tokenizer)

    def eval_records(self) -> list[dict[str, Any]]:
        """The fixed evaluation questions (the same for every run with this eval config)."""
        cfg, assets = self.cfg, self.assets
        assert assets is not None
        return seeded_subset(load_qa(assets.splits[cfg.dataset.eval_split]), cfg.eval.odqa.max_questions,
                             cfg.eval.odqa.seed)

    def eval_examples(self, tokenizer: Any) -> tuple[list[RagExample], dict[str, float]]:
        """Prompts for the evaluation questions, and retrieval recall."""
        split, records = self.cfg.dataset.eval_split, self.eval_records()
        examples = self.examples(split, records, tokenizer)
        return examples, retrieval_recall(self.retrieved[split], records, self.corpus_by_id)

    def compare_retrievers(self, tracked: TrackedRun) -> dict[str, float]:
        """recall@1/3/5 of this retriever and each one under ``retriever.compare``, on the same questions.

        Logged as ``retrieval/<name>/recall_at_<k>`` and as one table (``retrieval_comparison.md``).
        """
        cfg, assets = self.cfg, self.assets
        assert assets is not None
        others = cfg.retriever.get("compare") or {}
        if not others:
            return {}
        split, records = cfg.dataset.eval_split, self.eval_records()
        retrievers = {cfg.retriever.name: self.retriever}
        for name, other in others.items():
            retriever = instantiate(other.impl)
            retriever.prepare(RetrieverContext(cfg, assets, self.corpus_by_id, self.corpus_hash))
            retrievers[str(name)] = retriever
        depth = max(RECALL_KS)
        table = {name: retrieval_recall(retrieve(cfg, retriever, records, split, assets.splits[split],
                                                 assets.corpus_path, assets.cache_dir, self.corpus_hash, k=depth),
                                        records, self.corpus_by_id)
                 for name, retriever in retrievers.items()}
        text = recall_table(table, RECALL_KS, f"recall@k on {len(records)} {cfg.dataset.name} {split} questions")
        (self.workdir / "retrieval_comparison.md").write_text(text, encoding="utf-8")
        tracked.log_artifact(self.workdir / "retrieval_comparison.md")
        log.info("\n%s", text)
        metrics = {f"retrieval/{name}/{key}": value for name, recall in table.items() for key, value in recall.items()}
        tracked.log_metrics(metrics)
        return metrics

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
        """The starting model's metrics, cached per (model, data, retrieval, prompt, eval config, code).

        Parallel jobs of a sweep wait for the first one's evaluation instead of repeating it.
        """
        assets = self.assets
        assert assets is not None
        folder = assets.cache_dir / "base_eval" / base_eval_key(self.cfg, examples, assets)
        self.base_eval_dir = folder
        with cache_lock(folder):
            reused = (folder / "metrics.json").exists()
            if reused:
                log.info("reusing cached base-model evaluation %s", folder)
                seconds = read_json(folder / "timing.json")["seconds"]
            else:
                seconds = self.evaluate_base(examples, folder)
        # A sweep's report sums time/base_eval_s over the runs that reused it: the time the cache saved.
        self.base_eval_cost = {"base_eval/reused": float(reused), "time/base_eval_s": seconds}
        self.base_items = read_item_scores(folder)  # what a tuned model's paired deltas compare against
        return dict(read_json(folder / "metrics.json"))

    def evaluate_base(self, examples: list[RagExample], folder: Path) -> float:
        """Evaluate the starting model into ``folder`` (published whole); returns the seconds it took."""
        cfg, assets = self.cfg, self.assets
        assert assets is not None
        log.info("evaluating the base model once for this eval config (cached in %s)", folder)
        start = time.perf_counter()
        model = load_model(assets.model_path, cfg.model.dtype, self.device)
        tokenizer = load_tokenizer(assets.model_path)
        with atomic_path(folder) as tmp:
            metrics, _ = evaluate_model(model, tokenizer, cfg, examples, assets, out_dir=tmp)
            seconds = time.perf_counter() - start
            write_json(tmp / "timing.json", {"seconds": seconds})
            write_json(tmp / "metrics.json", metrics)
        del model
        release_memory()
        return seconds

    def prepare(self, tracked: TrackedRun | None = None) -> PreparedAssets:
        """Stage 1: assets in the cache, the corpus and a ready retriever (a trained one trains here)."""
        for folder in (resolve_cache_dir(self.cfg.paths.cache_dir), self.workdir):
            remove_stale_temps(folder)  # what killed jobs were writing; live writers' folders stay
        self.assets = prepare_assets(self.cfg)
        self.corpus_by_id = {p["id"]: p for p in load_corpus(self.assets.corpus_path)}
        check_top_k(self.cfg.retriever.top_k, len(self.corpus_by_id))  # before a retriever trains, a model loads
        self.corpus_hash = corpus_fingerprint(self.assets.corpus_path)
        self.retriever = build_retriever(self.cfg)
        context = RetrieverContext(self.cfg, self.assets, self.corpus_by_id, self.corpus_hash, run=tracked)
        self.retriever.prepare(context)
        if tracked is not None:
            tracked.set_tags(self.assets.source_revisions)  # the Hub commits this run read
            tracked.log_metrics(context.metrics)
            tracked.set_tags(context.tags)
            for name, path in context.artifacts.items():
                tracked.log_artifact(path, name)
        return self.assets

    def method_context(self, tokenizer: Any) -> MethodContext:
        cfg, assets = self.cfg, self.assets
        assert assets is not None
        model_key = {"model": starting_model_key(cfg.model)}
        return MethodContext(model_path=assets.model_path, tokenizer=tokenizer,
                             chat_template=cfg.model.chat_template, dtype=cfg.model.dtype,
                             cache_dir=assets.cache_dir, seed=cfg.seed, max_length=cfg.train.max_length,
                             model_key=model_key)

    def train(self, method: Method, tokenizer: Any,
              tracked: TrackedRun | None = None) -> tuple[Any, dict[str, float]]:
        """Stage 3: the method's data transforms and one-off setup, then the training loop."""
        cfg, assets = self.cfg, self.assets
        assert assets is not None
        L.seed_everything(cfg.seed, workers=True)
        context = self.method_context(tokenizer)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        examples = [as_training_example(ex) for ex in self.train_examples(tokenizer)]
        examples = method.transform_data(examples, context)
        timings["time/method_data_s"] = time.perf_counter() - start
        self.log_artifacts(context, tracked)
        # Reseeded: a transform that computed (e.g. self_synth sampling, on a cold cache) has drawn from
        # the global RNGs, one that read its cache has not; the model's init must not depend on which.
        L.seed_everything(cfg.seed, workers=True)
        start = time.perf_counter()
        model = build_trainable_model(cfg, assets.model_path).to(self.device)  # one-off setup (EWC's Fisher) too
        method.setup(model, context)
        timings["time/method_setup_s"] = time.perf_counter() - start
        curves = self.forgetting_curves(tokenizer, tracked)
        start = time.perf_counter()
        trained = fit(cfg, model, tokenizer, method, examples, self.workdir, tracked, [curves] if curves else [])
        timings["time/train_s"] = time.perf_counter() - start
        if curves is not None:  # part of train_s: what watching forgetting cost
            timings["time/during_s"] = curves.seconds
        return trained, {**timings, **context.metrics}

    def forgetting_curves(self, tokenizer: Any, tracked: TrackedRun | None) -> ForgettingCurves | None:
        """The callback that logs during/* while training (eval.during_training), or None when off."""
        during, assets = self.cfg.eval.during_training, self.assets
        if tracked is None or not during.every_n_steps or assets is None:
            return None
        shift = self.cfg.eval.shift
        return ForgettingCurves(tracked, tokenizer, int(during.every_n_steps),
                                assets.shift_prompts[:int(during.shift_texts)],
                                getattr(assets.retention, "task_dir", None), list(self.cfg.eval.retention.tasks),
                                int(during.limit), int(shift.max_tokens), int(shift.batch_size))

    def synthesize(self, method: Method, tokenizer: Any, tracked: TrackedRun) -> dict[str, float]:
        """Stage ``synthesize``: only the method's one-off data work (self_synth's set), no training."""
        context = self.method_context(tokenizer)
        start = time.perf_counter()
        method.prepare_data(context)
        metrics = {"time/method_prepare_s": time.perf_counter() - start, **context.metrics}
        if not method.transforms:
            log.warning("method %s has no data transform: there is nothing to synthesize", method.name)
        tracked.log_metrics(metrics)
        self.log_artifacts(context, tracked)
        write_json(self.workdir / "metrics.json", metrics)
        return metrics

    @staticmethod
    def log_artifacts(context: MethodContext, tracked: TrackedRun | None) -> None:
        if tracked is None:  # a DDP worker: rank 0 logs them
            return
        for name, path in context.artifacts.items():
            tracked.log_artifact(path, name)

    def evaluate(self, model: Any, tokenizer: Any, examples: list[RagExample], out_dir: Path) -> dict[str, float]:
        """Stage 4: ODQA, retention and distribution shift of a trained model, and its paired change
        against the base model (``base_metrics`` ran first) on each measure."""
        cfg, assets = self.cfg, self.assets
        assert assets is not None
        metrics, items = evaluate_model(model, tokenizer, cfg, examples, assets, out_dir=out_dir)
        metrics.update(paired_deltas(self.base_items, items, list(cfg.eval.retention.tasks), **cfg.eval.paired))
        base_model = None if has_adapters(model) else load_model(assets.model_path, cfg.model.dtype, self.device)
        metrics.update(shift_metric(model, tokenizer, cfg, assets, base_model=base_model))
        return metrics

    def run(self, tracked: TrackedRun) -> dict[str, Any]:
        cfg = self.cfg
        # Built first, so bad method settings fail before any asset is fetched or model trained.
        method: Method = instantiate(cfg.method.impl)
        assets = self.prepare(tracked)
        if cfg.stage == "prepare":
            return {}
        tokenizer = load_tokenizer(assets.model_path)
        if cfg.stage == "synthesize":
            return self.synthesize(method, tokenizer, tracked)
        examples, recall = self.eval_examples(tokenizer)
        tracked.log_metrics({f"retrieval/{k}": v for k, v in recall.items()})
        self.compare_retrievers(tracked)

        checkpoint = Path(cfg.checkpoint) if cfg.stage == "evaluate" else self.workdir / "checkpoint"
        timings: dict[str, float] = {}
        if cfg.stage == "all" and not checkpoint.exists():
            trained = None
            if self.fits(method):
                trained, timings = self.train(method, tokenizer, tracked)
            save_checkpoint_folder(checkpoint, trained, tokenizer, cfg)
            del trained  # evaluation reloads it from the folder, onto cfg.device
            release_memory()

        base = self.base_metrics(examples)
        model, tokenizer, _ = load_checkpoint_folder(checkpoint, assets.cache_dir, self.device)
        trained_weights = (checkpoint / "adapter").exists() or (checkpoint / "model").exists()
        done = self.workdir / "metrics.json"  # written once this run's own evaluation is logged
        if done.exists():  # a resumed run killed after its evaluation (during its post-hoc variants)
            metrics = read_json(done)
        else:
            metrics = self.evaluate_run(model, tokenizer, examples, checkpoint, trained_weights, base,
                                        {**timings, **{f"retrieval/{k}": v for k, v in recall.items()}}, tracked)
        if trained_weights and method.posthoc is not None:
            self.evaluate_variants(method.posthoc, model, tokenizer, examples, base, metrics, tracked)
        return metrics

    def evaluate_run(self, model: Any, tokenizer: Any, examples: list[RagExample], checkpoint: Path,
                     trained_weights: bool, base: dict[str, float], extra: dict[str, float],
                     tracked: TrackedRun) -> dict[str, Any]:
        """Stage 4 for this run: evaluate (or take the base evaluation), log, write metrics.json."""
        if trained_weights:
            eval_dir = self.workdir / "eval"
            metrics = self.evaluate(model, tokenizer, examples, eval_dir)
        else:  # the starting model itself: its (cached) evaluation is this run's
            metrics = dict(base)
            eval_dir = self.base_eval_dir
        metrics = with_deltas({**metrics, **extra, **self.base_eval_cost}, base)
        tracked.log_metrics(metrics)
        for path, name in ((eval_dir, "eval"), (checkpoint, "checkpoint")):
            tracked.log_artifact(path, name)
        write_json(self.workdir / "metrics.json", metrics)
        return metrics

    def fits(self, method: Method) -> bool:
        """Whether this job trains: ``run`` and every DDP worker must agree (a worker that skipped
        ``fit`` would leave rank 0 waiting for it)."""
        return self.cfg.stage == "all" and method.trains and not (self.workdir / "checkpoint").exists()

    def run_worker(self) -> dict[str, Any]:
        """A DDP worker (global rank > 0): rank 0's training, and nothing else.

        Rank 0 prepared, retrieved and cached everything before its ``fit`` started the workers, so
        this reads caches. It tracks, writes, saves and evaluates nothing (rank 0 does, once).
        """
        method: Method = instantiate(self.cfg.method.impl)
        assets = self.prepare()
        if self.fits(method):
            self.train(method, load_tokenizer(assets.model_path))
        return {}

    def evaluate_variants(self, posthoc: PosthocTransform, model: Any, tokenizer: Any, examples: list[RagExample],
                          base: dict[str, float], trained_metrics: dict[str, Any], trained: TrackedRun) -> None:
        """Stage 5 (post-hoc methods): each variant of the trained weights is its own MLflow run.

        Variant runs are nested under the trained run (``mlflow.parentRunId``) and carry its id in
        ``trained_run_id``; the no-op variant reuses the trained run's evaluation.
        """
        context = self.method_context(tokenizer)
        retrieval = {k: v for k, v in trained_metrics.items() if k.startswith("retrieval/")}
        for variant in posthoc.variants():
            out_dir = self.workdir / "variants" / variant.name
            if (out_dir / "metrics.json").exists():  # finished before this run was interrupted
                continue
            out_dir.mkdir(parents=True, exist_ok=True)
            run = start_tracking(self.cfg, out_dir, run_name=f"{self.cfg.run_name}-{variant.name}",
                                 extra_tags={"mlflow.parentRunId": str(trained.run_id), "variant": variant.name,
                                             "trained_run_id": str(trained.run_id)},
                                 extra_params=variant.params)
            try:
                if variant.identity:
                    metrics = dict(trained_metrics)
                else:
                    with posthoc.applied(model, variant, context):
                        metrics = self.evaluate(model, tokenizer, examples, out_dir / "eval")
                    metrics = with_deltas({**metrics, **retrieval}, base)
                log.info("variant %s: %s", variant.name,
                         {k: round(v, 4) for k, v in metrics.items() if k.startswith(("odqa/", "retention/macro"))})
                run.log_metrics(metrics)
                run.log_artifact(out_dir / "eval", "eval")
            except BaseException as exc:
                run.finish(terminal_status(exc), error=f"{type(exc).__name__}: {exc}")
                raise
            run.finish("FINISHED")
            write_json(out_dir / "metrics.json", metrics)  # last: marks the variant done for a resumed run


def run_job(cfg: DictConfig, workdir: Path, tags: Mapping[str, str] | None = None,
            sweeping: bool = False) -> dict[str, Any]:
    """Run one job end to end inside its own MLflow run; a failure marks the run FAILED with the error.

    Settings are checked first (``validate_config``): a bad one fails before any run, asset or model.
    ``tags`` are added to the run (a sweep's shared ``sweep_id``). In a sweep (``sweeping``) the metrics
    get ``objective``, what the sweeper maximizes, computed before the run is marked FINISHED, so a NaN
    objective or a missing objective metric fails this run with its reason, as it fails the trial. A job
    stopped from outside (Ctrl-C, SIGTERM) ends KILLED. ``stage=report`` opens no job run: the report
    queries finished runs and logs itself as a run of its own.
    """
    validate_config(cfg, sweeping)
    if cfg.stage == "report":
        from ragforget.report.stage import run_report

        run_report(cfg)
        return {}
    workdir = Path(cfg.resume_dir or workdir).resolve()
    if global_rank() != 0:  # a worker started by trainer.strategy: rank 0 tracks and writes this job
        return Job(cfg, workdir).run_worker()
    workdir.mkdir(parents=True, exist_ok=True)
    if not cfg.resume_dir:  # a resumed run keeps the config it was started with
        OmegaConf.save(cfg, workdir / "config.yaml", resolve=True)
    tracked = start_tracking(cfg, workdir, extra_tags=tags)
    tracked.log_artifact(workdir / "config.yaml")
    try:
        metrics = Job(cfg, workdir).run(tracked)
        objective = objective_value(metrics, cfg.objective, cfg.stage) if sweeping else None  # raises if NaN
        if objective is not None:
            metrics["objective"] = objective
            tracked.log_metrics({"objective": objective})
    except BaseException as exc:
        tracked.finish(terminal_status(exc), error=f"{type(exc).__name__}: {exc}")
        raise
    tracked.finish("FINISHED")
    return metrics
