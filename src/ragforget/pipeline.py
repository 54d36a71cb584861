"""The stages in order: prepare -> retrieve -> train -> checkpoint -> evaluate [-> post-hoc variants] -> MLflow.

``run_job`` is what ``run.py`` calls for every Hydra job (one MLflow run per job); ``STAGES`` maps
``cfg.stage`` to what the job runs. Every stage is a function over explicit values: the ``Job`` (config,
run folder, device: fixed before any work), the ``Prepared`` inputs that ``prepare`` returns, and the
job's MLflow run, opened and ended by ``job_run`` (``tracking.status.tracked_run``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

import ragforget
from ragforget.assets.cache import resolve_cache_dir
from ragforget.data.rag_examples import RagExample, as_training_example, build_examples
from ragforget.data.records import corpus_fingerprint, load_corpus, load_qa, seeded_subset
from ragforget.errors import ConfigError
from ragforget.evaluation.base_cache import BaseEvaluation, base_evaluation
from ragforget.evaluation.during_training import ForgettingCurves
from ragforget.evaluation.evaluate import evaluate_model, paired_deltas, shift_metric, with_deltas
from ragforget.methods.base import Method, MethodContext, PosthocTransform
from ragforget.methods.build import build_method
from ragforget.models.loading import has_adapters, load_model, load_tokenizer, starting_model_key
from ragforget.prepare import PreparedAssets, prepare_assets
from ragforget.retrieval.base import Retriever, RetrieverContext
from ragforget.retrieval.metrics import recall_table
from ragforget.retrieval.stage import RECALL_KS, build_retriever, check_top_k, retrieval_recall, retrieve
from ragforget.tracking.mlflow_run import TrackedRun, flatten
from ragforget.tracking.status import tracked_run
from ragforget.tracking.sweep import objective_value
from ragforget.training.checkpoint import load_checkpoint_folder, save_checkpoint_folder
from ragforget.training.distributed import global_rank
from ragforget.training.train import build_trainable_model, fit
from ragforget.utils.device import check_device, release_memory, resolve_device
from ragforget.utils.instantiate import instantiate
from ragforget.utils.io import read_json, remove_stale_temps, write_json
from ragforget.utils.logging import get_logger
from ragforget.validation import validate_config

log = get_logger(__name__)

RUN_ID_FILE = "mlflow_run_id.txt"


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """What identifies a run in MLflow searches (the report stage selects runs by these); MLflow adds
    its source tags (git commit, user, entry point) when the run is created."""
    return {"method": cfg.method.name, "model": cfg.model.name, "dataset": cfg.dataset.name,
            "retriever": cfg.retriever.name, "seed": str(cfg.seed), "stage": cfg.stage,
            "ragforget_version": ragforget.__version__}


@contextmanager
def job_run(cfg: DictConfig, workdir: Path, run_name: str | None = None,
            extra_tags: Mapping[str, str] | None = None,
            extra_params: Mapping[str, Any] | None = None) -> Iterator[TrackedRun]:
    """An MLflow run of this job for the block: a new one, or the one recorded in ``workdir`` when resuming.

    Its params are the resolved config (and ``extra_params``); ``tracked_run`` ends it FINISHED, FAILED or
    KILLED with the block.
    """
    run = TrackedRun(cfg.logger.tracking_uri, cfg.logger.experiment_name,
                     str(Path(cfg.logger.artifact_location).resolve()))
    id_file = workdir / RUN_ID_FILE
    previous = id_file.read_text().strip() if id_file.exists() else None
    with tracked_run(run, run_name or cfg.run_name, {**run_tags(cfg), **(extra_tags or {})}, run_id=previous):
        id_file.write_text(str(run.run_id))
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(resolved, dict)
        run.log_params({**flatten(resolved), **(extra_params or {})})  # type: ignore[arg-type]  # str keys
        yield run


@dataclass(frozen=True)
class Job:
    """One configured job: what every stage reads, fixed before any work starts."""

    cfg: DictConfig
    workdir: Path  # the run folder: checkpoints, evaluation, metrics.json, the MLflow run id
    device: str    # where every inference pass runs (cfg.device resolved)

    @classmethod
    def for_config(cls, cfg: DictConfig, workdir: Path) -> Job:
        """The job of ``cfg`` in ``workdir``; a device this machine lacks fails here, before any work."""
        return cls(cfg, workdir, resolve_device(check_device(cfg.device)))


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` hands the later stages: the assets in the cache, the corpus and a ready retriever."""

    assets: PreparedAssets
    corpus_by_id: dict[str, dict[str, Any]]
    corpus_hash: str
    retriever: Retriever

    def retrieve(self, cfg: DictConfig, split: str, records: list[dict[str, Any]],
                 retriever: Retriever | None = None, k: int | None = None) -> dict[str, list[str]]:
        """Ranked passage ids per question of ``records`` of ``split`` (cached), by this job's retriever
        unless another is given; ``k`` defaults to ``retriever.top_k``."""
        return retrieve(cfg, retriever or self.retriever, records, split, self.assets.splits[split],
                        self.assets.corpus_path, self.assets.cache_dir, self.corpus_hash, k=k)


@dataclass(frozen=True)
class EvalQuestions:
    """The fixed evaluation questions as prompts, and their retrieval metrics (``retrieval/*``)."""

    examples: list[RagExample]
    retrieval: dict[str, float]


def prepare(job: Job, run: TrackedRun | None) -> Prepared:
    """Stage 1: assets in the cache, the corpus and a ready retriever (a trained one trains here).

    ``run`` is None in a DDP worker, which logs nothing (rank 0 does).
    """
    cfg = job.cfg
    for folder in (resolve_cache_dir(cfg.paths.cache_dir), job.workdir):
        remove_stale_temps(folder)  # what killed jobs were writing; live writers' folders stay
    assets = prepare_assets(cfg)
    corpus_by_id = {p["id"]: p for p in load_corpus(assets.corpus_path)}
    check_top_k(cfg.retriever.top_k, len(corpus_by_id))  # before a retriever trains, a model loads
    corpus_hash = corpus_fingerprint(assets.corpus_path)
    retriever = build_retriever(cfg)
    context = RetrieverContext(cfg, assets, corpus_by_id, corpus_hash, run=run)
    retriever.prepare(context)
    if run is not None:
        run.set_tags(assets.source_revisions)  # the Hub commits this run read
        run.log_metrics(context.metrics)
        run.set_tags(context.tags)
        for name, path in context.artifacts.items():
            run.log_artifact(path, name)
    return Prepared(assets, corpus_by_id, corpus_hash, retriever)


def rag_examples(job: Job, prepared: Prepared, split: str, records: list[dict[str, Any]],
                 tokenizer: Any) -> tuple[list[RagExample], dict[str, list[str]]]:
    """Stage 2: passages retrieved for ``records`` of ``split`` (cached), the prompts built from them,
    and the retrieved passage ids."""
    retrieved = prepared.retrieve(job.cfg, split, records)
    prompt = instantiate(job.cfg.prompt)
    return build_examples(records, retrieved, prepared.corpus_by_id, prompt, tokenizer), retrieved


def eval_questions(job: Job, prepared: Prepared, tokenizer: Any, run: TrackedRun) -> EvalQuestions:
    """The fixed evaluation questions (the same for every run with this eval config) as prompts; their
    retrieval recall and the comparison of retrievers (``retriever.compare``) are logged."""
    cfg = job.cfg
    split = cfg.dataset.eval_split
    records = seeded_subset(load_qa(prepared.assets.splits[split]), cfg.eval.odqa.max_questions, cfg.eval.odqa.seed)
    examples, retrieved = rag_examples(job, prepared, split, records, tokenizer)
    recall = retrieval_recall(retrieved, records, prepared.corpus_by_id)
    retrieval = {f"retrieval/{k}": v for k, v in recall.items()}
    run.log_metrics(retrieval)
    compare_retrievers(job, prepared, records, run)
    return EvalQuestions(examples, retrieval)


def compare_retrievers(job: Job, prepared: Prepared, records: list[dict[str, Any]],
                       run: TrackedRun) -> dict[str, float]:
    """recall@1/3/5 of this retriever and each one under ``retriever.compare``, on the evaluation questions.

    Logged as ``retrieval/<name>/recall_at_<k>`` and as one table (``retrieval_comparison.md``).
    """
    cfg = job.cfg
    others = cfg.retriever.get("compare") or {}
    if not others:
        return {}
    split = cfg.dataset.eval_split
    retrievers = {cfg.retriever.name: prepared.retriever}
    for name, other in others.items():
        retriever = instantiate(other.impl)
        retriever.prepare(RetrieverContext(cfg, prepared.assets, prepared.corpus_by_id, prepared.corpus_hash))
        retrievers[str(name)] = retriever
    depth = max(RECALL_KS)
    table = {name: retrieval_recall(prepared.retrieve(cfg, split, records, retriever, k=depth), records,
                                    prepared.corpus_by_id)
             for name, retriever in retrievers.items()}
    text = recall_table(table, RECALL_KS, f"recall@k on {len(records)} {cfg.dataset.name} {split} questions")
    (job.workdir / "retrieval_comparison.md").write_text(text, encoding="utf-8")
    run.log_artifact(job.workdir / "retrieval_comparison.md")
    log.info("\n%s", text)
    metrics = {f"retrieval/{name}/{key}": value for name, recall in table.items() for key, value in recall.items()}
    run.log_metrics(metrics)
    return metrics


def train_examples(job: Job, prepared: Prepared, tokenizer: Any) -> list[RagExample]:
    """Prompts for a seeded subset of the training split."""
    cfg, assets = job.cfg, prepared.assets
    split = cfg.dataset.train_split
    if split is None or split not in assets.splits:
        raise ConfigError("dataset.train_split", f"dataset '{cfg.dataset.name}' has no training split",
                          "use it for evaluation with method=base, or pick another dataset")
    records = seeded_subset(load_qa(assets.splits[split]), cfg.train.max_examples, cfg.seed)
    return rag_examples(job, prepared, split, records, tokenizer)[0]


def method_context(cfg: DictConfig, assets: PreparedAssets, tokenizer: Any) -> MethodContext:
    """What a method's data transforms, setup and post-hoc variants read."""
    model_key = {"model": starting_model_key(cfg.model)}
    return MethodContext(model_path=assets.model_path, tokenizer=tokenizer,
                         chat_template=cfg.model.chat_template, dtype=cfg.model.dtype,
                         cache_dir=assets.cache_dir, seed=cfg.seed, max_length=cfg.train.max_length,
                         model_key=model_key)


def log_method_artifacts(context: MethodContext, run: TrackedRun | None) -> None:
    if run is None:  # a DDP worker: rank 0 logs them
        return
    for name, path in context.artifacts.items():
        run.log_artifact(path, name)


def trains(job: Job, method: Method) -> bool:
    """Whether this job trains: rank 0 and every DDP worker must agree (a worker that skipped ``fit``
    would leave rank 0 waiting for it). Only stage=all trains, and only until its checkpoint folder exists."""
    return job.cfg.stage == "all" and method.trains and not (job.workdir / "checkpoint").exists()


def train(job: Job, prepared: Prepared, method: Method, tokenizer: Any,
          run: TrackedRun | None) -> tuple[Any, dict[str, float]]:
    """Stage 3: the method's data transforms and one-off setup, then the training loop."""
    cfg, assets = job.cfg, prepared.assets
    L.seed_everything(cfg.seed, workers=True)
    context = method_context(cfg, assets, tokenizer)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    examples = [as_training_example(ex) for ex in train_examples(job, prepared, tokenizer)]
    examples = method.transform_data(examples, context)
    timings["time/method_data_s"] = time.perf_counter() - start
    log_method_artifacts(context, run)
    # Reseeded: a transform that computed (e.g. self_synth sampling, on a cold cache) has drawn from
    # the global RNGs, one that read its cache has not; the model's init must not depend on which.
    L.seed_everything(cfg.seed, workers=True)
    start = time.perf_counter()
    model = build_trainable_model(cfg, assets.model_path).to(job.device)  # type: ignore[arg-type]  # one-off setup (EWC's Fisher) too
    method.setup(model, context)
    timings["time/method_setup_s"] = time.perf_counter() - start
    curves = forgetting_curves(cfg, assets, tokenizer, run)
    start = time.perf_counter()
    trained = fit(cfg, model, tokenizer, method, examples, job.workdir, run, [curves] if curves else [])
    timings["time/train_s"] = time.perf_counter() - start
    if curves is not None:  # part of train_s: what watching forgetting cost
        timings["time/during_s"] = curves.seconds
    return trained, {**timings, **context.metrics}


def forgetting_curves(cfg: DictConfig, assets: PreparedAssets, tokenizer: Any,
                      run: TrackedRun | None) -> ForgettingCurves | None:
    """The callback that logs during/* while training (eval.during_training), or None when off."""
    during = cfg.eval.during_training
    if run is None or not during.every_n_steps:
        return None
    shift = cfg.eval.shift
    return ForgettingCurves(run, tokenizer, int(during.every_n_steps), assets.shift_prompts[:int(during.shift_texts)],
                            getattr(assets.retention, "task_dir", None), list(cfg.eval.retention.tasks),
                            int(during.limit), int(shift.max_tokens), int(shift.batch_size))


def synthesize(job: Job, prepared: Prepared, method: Method, tokenizer: Any, run: TrackedRun) -> dict[str, float]:
    """Stage ``synthesize``: only the method's one-off data work (self_synth's set), no training."""
    context = method_context(job.cfg, prepared.assets, tokenizer)
    start = time.perf_counter()
    method.prepare_data(context)
    metrics = {"time/method_prepare_s": time.perf_counter() - start, **context.metrics}
    if not method.transforms:
        log.warning("method %s has no data transform: there is nothing to synthesize", method.name)
    run.log_metrics(metrics)
    log_method_artifacts(context, run)
    write_json(job.workdir / "metrics.json", metrics)
    return metrics


def evaluate_trained(job: Job, assets: PreparedAssets, base: BaseEvaluation, model: Any, tokenizer: Any,
                     examples: list[RagExample], out_dir: Path) -> dict[str, float]:
    """ODQA, retention and distribution shift of trained weights, and their paired change against the
    base model's evaluation on each measure."""
    cfg = job.cfg
    metrics, items = evaluate_model(model, tokenizer, cfg, examples, assets, out_dir=out_dir)
    metrics.update(paired_deltas(base.items, items, list(cfg.eval.retention.tasks), **cfg.eval.paired))
    base_model = None if has_adapters(model) else load_model(assets.model_path, cfg.model.dtype, job.device)
    metrics.update(shift_metric(model, tokenizer, cfg, assets, base_model=base_model))
    return metrics


def evaluate(job: Job, prepared: Prepared, method: Method, questions: EvalQuestions, checkpoint: Path,
             timings: dict[str, float], run: TrackedRun) -> dict[str, Any]:
    """Stage 4: the checkpoint folder's model against the starting model's (cached) evaluation, then
    stage 5 for post-hoc methods: each variant of the trained weights."""
    base = base_evaluation(job.cfg, questions.examples, prepared.assets, job.device)
    model, tokenizer, _ = load_checkpoint_folder(checkpoint, prepared.assets.cache_dir, job.device)
    trained_weights = (checkpoint / "adapter").exists() or (checkpoint / "model").exists()
    done = job.workdir / "metrics.json"  # written once this run's own evaluation is logged
    if done.exists():  # a resumed run killed after its evaluation (during its post-hoc variants)
        metrics = read_json(done)
    else:
        metrics = log_evaluation(job, prepared.assets, base, model, tokenizer, questions, checkpoint,
                                 trained_weights, timings, run)
    if trained_weights and method.posthoc is not None:
        evaluate_variants(job, prepared.assets, method.posthoc, base, model, tokenizer, questions.examples,
                          metrics, run)
    return metrics


def log_evaluation(job: Job, assets: PreparedAssets, base: BaseEvaluation, model: Any, tokenizer: Any,
                   questions: EvalQuestions, checkpoint: Path, trained_weights: bool, timings: dict[str, float],
                   run: TrackedRun) -> dict[str, Any]:
    """This run's evaluation (the base one when it has no trained weights), logged with its changes
    against the base model; metrics.json, written last, marks it done for a resumed run."""
    if trained_weights:
        eval_dir = job.workdir / "eval"
        metrics = evaluate_trained(job, assets, base, model, tokenizer, questions.examples, eval_dir)
    else:  # the starting model itself: its (cached) evaluation is this run's
        metrics = dict(base.metrics)
        eval_dir = base.folder
    metrics = with_deltas({**metrics, **timings, **questions.retrieval, **base.cost}, base.metrics)
    run.log_metrics(metrics)
    for path, name in ((eval_dir, "eval"), (checkpoint, "checkpoint")):
        run.log_artifact(path, name)
    write_json(job.workdir / "metrics.json", metrics)
    return metrics


def evaluate_variants(job: Job, assets: PreparedAssets, posthoc: PosthocTransform, base: BaseEvaluation,
                      model: Any, tokenizer: Any, examples: list[RagExample], trained_metrics: dict[str, Any],
                      trained: TrackedRun) -> None:
    """Stage 5 (post-hoc methods): each variant of the trained weights is its own MLflow run.

    Variant runs are nested under the trained run (``mlflow.parentRunId``) and carry its id in
    ``trained_run_id``; the no-op variant reuses the trained run's evaluation.
    """
    cfg = job.cfg
    context = method_context(cfg, assets, tokenizer)
    retrieval = {k: v for k, v in trained_metrics.items() if k.startswith("retrieval/")}
    for variant in posthoc.variants():
        out_dir = job.workdir / "variants" / variant.name
        if (out_dir / "metrics.json").exists():  # finished before this run was interrupted
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        tags = {"mlflow.parentRunId": str(trained.run_id), "variant": variant.name,
                "trained_run_id": str(trained.run_id)}
        with job_run(cfg, out_dir, run_name=f"{cfg.run_name}-{variant.name}", extra_tags=tags,
                     extra_params=variant.params) as run:
            if variant.identity:
                metrics = dict(trained_metrics)
            else:
                with posthoc.applied(model, variant, context):
                    metrics = evaluate_trained(job, assets, base, model, tokenizer, examples, out_dir / "eval")
                metrics = with_deltas({**metrics, **retrieval}, base.metrics)
            log.info("variant %s: %s", variant.name,
                     {k: round(v, 4) for k, v in metrics.items() if k.startswith(("odqa/", "retention/macro"))})
            run.log_metrics(metrics)
            run.log_artifact(out_dir / "eval", "eval")
        write_json(out_dir / "metrics.json", metrics)  # last: marks the variant done for a resumed run


# What each stage= runs inside the job's MLflow run, given the job, its method (built first, so bad method
# settings fail before any asset is fetched) and the run. stage=report is no job: see run_job.
Stage = Callable[[Job, Method, TrackedRun], dict[str, Any]]


def prepare_stage(job: Job, method: Method, run: TrackedRun) -> dict[str, Any]:
    """stage=prepare: assets, corpus and retriever into the cache, nothing else."""
    prepare(job, run)
    return {}


def synthesize_stage(job: Job, method: Method, run: TrackedRun) -> dict[str, Any]:
    """stage=synthesize: the method's one-off data (self_synth's set) without training."""
    prepared = prepare(job, run)
    return synthesize(job, prepared, method, load_tokenizer(prepared.assets.model_path), run)


def evaluate_stage(job: Job, method: Method, run: TrackedRun) -> dict[str, Any]:
    """stage=evaluate: the checkpoint folder an earlier run wrote (``checkpoint=``)."""
    prepared = prepare(job, run)
    questions = eval_questions(job, prepared, load_tokenizer(prepared.assets.model_path), run)
    return evaluate(job, prepared, method, questions, Path(job.cfg.checkpoint), {}, run)


def all_stages(job: Job, method: Method, run: TrackedRun) -> dict[str, Any]:
    """stage=all: prepare, train into this run's checkpoint folder (unless a resumed run has it), evaluate."""
    prepared = prepare(job, run)
    tokenizer = load_tokenizer(prepared.assets.model_path)
    questions = eval_questions(job, prepared, tokenizer, run)
    checkpoint = job.workdir / "checkpoint"
    timings: dict[str, float] = {}
    if not checkpoint.exists():
        trained = None
        if trains(job, method):
            trained, timings = train(job, prepared, method, tokenizer, run)
        save_checkpoint_folder(checkpoint, trained, tokenizer, job.cfg)
        del trained  # evaluation reloads it from the folder, onto cfg.device
        release_memory()
    return evaluate(job, prepared, method, questions, checkpoint, timings, run)


STAGES: dict[str, Stage] = {
    "all": all_stages,
    "prepare": prepare_stage,
    "synthesize": synthesize_stage,
    "evaluate": evaluate_stage,
}


def run_worker(job: Job) -> dict[str, Any]:
    """A DDP worker (global rank > 0): rank 0's training, and nothing else.

    Rank 0 prepared, retrieved and cached everything before its ``fit`` started the workers, so
    this reads caches. It tracks, writes, saves and evaluates nothing (rank 0 does, once).
    """
    cfg = job.cfg
    method: Method = build_method(cfg.method)
    prepared = prepare(job, None)
    if trains(job, method):
        train(job, prepared, method, load_tokenizer(prepared.assets.model_path), None)
    return {}


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
    job = Job.for_config(cfg, Path(cfg.resume_dir or workdir).resolve())
    if global_rank() != 0:  # a worker started by trainer.strategy: rank 0 tracks and writes this job
        return run_worker(job)
    job.workdir.mkdir(parents=True, exist_ok=True)
    if not cfg.resume_dir:  # a resumed run keeps the config it was started with
        OmegaConf.save(cfg, job.workdir / "config.yaml", resolve=True)
    with job_run(cfg, job.workdir, extra_tags=tags) as run:
        run.log_artifact(job.workdir / "config.yaml")
        method: Method = build_method(cfg.method)
        metrics = STAGES[cfg.stage](job, method, run)
        objective = objective_value(metrics, cfg.objective, cfg.stage) if sweeping else None  # raises if NaN
        if objective is not None:
            metrics["objective"] = objective
            run.log_metrics({"objective": objective})
    return metrics
