"""Settings that must fail before any work: ``validate_config`` checks a composed job config.

Without these checks a bad value runs for minutes before failing (``trainer.max_steps=0`` after the
assets are fetched and the passages retrieved), or produces numbers instead of an error
(``train.max_examples=0`` logs the base weights as a trained run). The pipeline calls this before
it opens an MLflow run, fetches an asset or loads a model, so it reads the config and small local
files only (a checkpoint or run folder's listing, a saved config.yaml).

Numeric settings live in one table (``SETTINGS``: dotted key -> ``Number`` rule), checked wherever
the key exists in the composed config (a method's keys exist only when that method is selected).
Checks that already have a home elsewhere are called, not copied: ``check_device`` for ``device``,
``resumed_config`` for ``resume_dir``, ``validate_tasks`` for the offline retention tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from ragforget.errors import ConfigError
from ragforget.evaluation.retention.task_folders import validate_tasks
from ragforget.resume import resumed_config
from ragforget.retrieval.closed_book import ClosedBookRetriever
from ragforget.training.callbacks import SECTIONS as TRAINER_PARTS
from ragforget.utils.device import check_device

STAGES = ("all", "prepare", "synthesize", "evaluate", "report")  # what run.py's stage= can be
_ABSENT = object()  # a key this composition does not have (another method's, another retriever's)


@dataclass(frozen=True)
class Number:
    """What one numeric setting must be: a finite number (an int if ``integer``) within the bounds.

    ``null`` allows null, ``also`` lists other values taken as they are (``-1`` for "no limit",
    ``"auto"``); ``hint`` is what the error tells the user to do.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False     # the bound itself is excluded: (low, ...
    high_open: bool = False    # ..., high)
    integer: bool = False
    null: bool = False
    also: tuple[Any, ...] = ()
    hint: str = ""

    def describe(self) -> str:
        """The rule in words, for the error message (e.g. 'null or an integer >= 1')."""
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            kind += f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            kind += f" {'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            kind += f" {'<' if self.high_open else '<='} {self.high:g}"
        extras = ["null"] if self.null else []
        extras += [repr(value) for value in self.also]
        return " or ".join([*extras, kind]) if extras else kind

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` satisfies the rule (bools are not numbers here: ``true`` is no rate)."""
        if value is None:
            return self.null
        if any(type(value) is type(other) and value == other for other in self.also):
            return True
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


POSITIVE_INT = Number(low=1, integer=True)
COUNT = Number(low=0, integer=True)
OPTIONAL_POSITIVE_INT = Number(low=1, integer=True, null=True)
POSITIVE = Number(low=0, low_open=True)
NON_NEGATIVE = Number(low=0)
SHARE = Number(low=0, high=1)
SEED = Number(integer=True)
LOSS_WEIGHT = Number(low=0, hint="0 switches the term off")
ANTI_FORGETTING_WEIGHT = Number(low=0, hint="0 switches the term off, as in sft; negative would reward forgetting")

# train.max_length is the prompt + answer window; collate_for_training cuts a longer prompt from the left,
# keeping its end (the question's tail and the answer cue), and a long answer down to half the window. At
# 1 the one kept token has nothing to predict: the run trains, logs a loss and learns nothing. 32 holds a
# short answer with its end-of-turn token and the prompt's last words: a floor, not a recommendation.
MIN_MAX_LENGTH = 32

SETTINGS: dict[str, Number] = {
    "seed": SEED,
    # training
    "train.batch_size": POSITIVE_INT,
    "train.lr": replace(POSITIVE, hint="e.g. 1e-3 for LoRA, 5e-5 for full fine-tuning"),
    "train.weight_decay": NON_NEGATIVE,
    "train.warmup_ratio": Number(low=0, high=1, high_open=True, hint="the share of steps spent warming up, e.g. 0.05"),
    "train.max_examples": replace(OPTIONAL_POSITIVE_INT, hint="null trains on the whole split; 0 would train on "
                                  "nothing and log the base weights as a trained run; method=base evaluates them"),
    "train.max_length": Number(low=MIN_MAX_LENGTH, integer=True,
                               hint=f"prompt + answer tokens; below {MIN_MAX_LENGTH} the answers are truncated "
                                    "away and nothing is learned; RAG prompts are ~300 tokens at top-3"),
    "train.checkpoint_every_n_steps": POSITIVE_INT,
    "train.loss_chunk_rows": replace(POSITIVE_INT, hint="64 suits a CPU, 256 a GPU"),
    "trainer.max_steps": Number(low=1, integer=True, also=(-1,), hint="-1: no step limit, trainer.max_epochs then "
                                                                      "bounds training; 0 would train nothing"),
    "trainer.max_epochs": Number(low=1, integer=True, null=True, also=(-1,)),
    "trainer.accumulate_grad_batches": POSITIVE_INT,
    "trainer.gradient_clip_val": Number(low=0, null=True),
    "trainer.log_every_n_steps": POSITIVE_INT,
    "logger.log_every_n_steps": POSITIVE_INT,
    "model.lora.r": POSITIVE_INT,
    "model.lora.alpha": POSITIVE,
    "model.lora.dropout": Number(low=0, high=1, high_open=True),
    # retrieval and prompts (retriever.top_k depends on the retriever: see _check_top_k)
    "prompt.max_passage_tokens": POSITIVE_INT,
    "retriever.impl.k1": NON_NEGATIVE,
    "retriever.impl.b": SHARE,
    "retriever.impl.batch_size": POSITIVE_INT,
    "retriever.impl.max_length": POSITIVE_INT,
    "retriever.impl.max_seq_length": POSITIVE_INT,
    "retriever.impl.seed": SEED,
    "retriever.impl.stage1.max_examples": OPTIONAL_POSITIVE_INT,
    "retriever.impl.stage1.negatives": COUNT,
    "retriever.impl.stage1.mining_depth": COUNT,
    "retriever.impl.stage1.batch_size": POSITIVE_INT,
    "retriever.impl.stage1.max_steps": POSITIVE_INT,
    "retriever.impl.stage1.lr": POSITIVE,
    "retriever.impl.stage1.tau": POSITIVE,
    "retriever.impl.stage1.teacher_tau": POSITIVE,
    "retriever.impl.stage1.align": LOSS_WEIGHT,
    "retriever.impl.stage1.invariance": LOSS_WEIGHT,
    # evaluation
    "eval.odqa.max_questions": replace(OPTIONAL_POSITIVE_INT, hint="null evaluates the whole split; 0 has no "
                                       "accuracy to report"),
    "eval.odqa.seed": SEED,
    "eval.odqa.batch_size": POSITIVE_INT,
    "eval.odqa.max_new_tokens": POSITIVE_INT,
    "eval.paired.resamples": Number(low=100, integer=True, hint="bootstrap resamples; 2000 keeps the interval's "
                                    "ends stable to about 0.1 point"),
    "eval.paired.seed": SEED,
    "eval.paired.level": Number(low=0, high=1, low_open=True, high_open=True, hint="e.g. 0.95"),
    "eval.during_training.every_n_steps": replace(OPTIONAL_POSITIVE_INT, hint="null: no forgetting curves"),
    "eval.during_training.limit": POSITIVE_INT,
    "eval.during_training.shift_texts": POSITIVE_INT,
    "eval.shift.num_texts": POSITIVE_INT,
    "eval.shift.seed": SEED,
    "eval.shift.max_tokens": POSITIVE_INT,
    "eval.shift.batch_size": POSITIVE_INT,
    "eval.retention.limit": replace(OPTIONAL_POSITIVE_INT, hint="items per task; null: each task's own size"),
    "eval.retention.seed": SEED,
    "eval.retention.batch_size": POSITIVE_INT,
    "eval.retention.scoring_batch_size": Number(low=1, integer=True, also=("auto",)),
    "eval.retention.max_gen_toks": OPTIONAL_POSITIVE_INT,
    "eval.retention.num_fewshot": Number(low=0, integer=True, null=True),
    # general data (replay, ewc)
    "general_data.max_rows": OPTIONAL_POSITIVE_INT,
    "general_data.max_chars": POSITIVE_INT,
    "general_data.seed": SEED,
    # methods: each part's settings, in the part (conf/method/*.yaml)
    "method.terms.selfaug.weight": ANTI_FORGETTING_WEIGHT,
    "method.terms.output_kl.weight": ANTI_FORGETTING_WEIGHT,
    "method.terms.l2sp.weight": ANTI_FORGETTING_WEIGHT,
    "method.terms.ewc.weight": ANTI_FORGETTING_WEIGHT,
    "method.terms.ewc.num_samples": POSITIVE_INT,
    "method.terms.ewc.max_length": Number(low=2, integer=True, null=True, hint="null: train.max_length"),
    "method.terms.orthogonal.weight": ANTI_FORGETTING_WEIGHT,
    "method.transforms.replay.ratio": replace(SHARE, hint="the share of training examples that are general data, "
                                              "e.g. 0.1"),
    "method.transforms.self_synth.ratio": replace(SHARE, hint="the share of training examples that are "
                                                  "reconstructed, e.g. 0.1"),
    "method.transforms.self_synth.source.oversample": POSITIVE,
    "method.transforms.self_synth.source.seed": SEED,
    "method.optimizer.fraction": Number(low=0, high=1, low_open=True, hint="the paper recommends 0.05-0.2; 1 is AdamW"),
    "method.transforms.sdft.max_new_tokens": POSITIVE_INT,
    "method.transforms.sdft.batch_size": POSITIVE_INT,
}

# Lists whose every element follows the rule (and which may not be empty).
LIST_SETTINGS: dict[str, Number] = {
    "method.posthoc.weights": replace(SHARE, hint="0 = the base model, 1 = the trained one"),
}

# Where a dataset's split names are declared: the QA source's mapping (Hub sets: ours -> theirs; SQuAD:
# the fraction per split), or a source with one fixed split (its build() writes only that one).
SPLIT_KEYS = ("splits", "fractions")
FIXED_SPLITS: dict[str, tuple[str, ...]] = {"ragforget.data.squad.SquadShiftsWikiOpen": ("test",)}

# What training/checkpoint.py writes into every checkpoint folder (adapter/ or model/ only when trained).
CHECKPOINT_PARTS = ("config.yaml", "tokenizer")
OFFLINE_SUITE = "ragforget.evaluation.retention.suites.OfflineSuite"
CLOSED_BOOK = f"{ClosedBookRetriever.__module__}.{ClosedBookRetriever.__qualname__}"


def validate_config(cfg: DictConfig, sweeping: bool) -> None:
    """Raise ConfigError (naming the key, the value and what to do) for a setting that cannot work.

    ``sweeping``: the job is one of a sweep whose sweeper reads ``objective`` at the end, so an
    objective the job cannot produce is refused now rather than after the run.
    """
    _check_stage(cfg.stage)
    if cfg.stage == "report":  # the report reads finished runs: the job settings are not used
        return
    check_device(cfg.device)
    if cfg.get("resume_dir"):
        resumed_config(cfg, ())  # raises when the folder is not a run folder
    for key, rule in SETTINGS.items():
        check_number(key, _lookup(cfg, key), rule)
    for key, rule in LIST_SETTINGS.items():
        _check_list(key, _lookup(cfg, key), rule)
    _check_resolves(cfg)  # after the settings: a bad number is named there, not in what interpolates it
    _check_training_budget(cfg)
    _check_top_k(cfg)
    _check_splits(cfg)
    _check_checkpoint(cfg)
    _check_retention(cfg)
    _check_trainer_parts(cfg)
    _check_objective(cfg, sweeping)


def check_number(key: str, value: Any, rule: Number) -> None:
    """ConfigError on ``key`` unless ``value`` follows ``rule``; a key this config lacks is skipped."""
    if value is _ABSENT or rule.accepts(value):
        return
    raise ConfigError(key, f"must be {rule.describe()}, got {value!r}", rule.hint)


def _lookup(cfg: DictConfig, key: str) -> Any:
    """The resolved value at ``key`` (containers as plain lists and dicts), or ``_ABSENT``."""
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _check_list(key: str, value: Any, rule: Number) -> None:
    if value is _ABSENT:
        return
    if not isinstance(value, list) or not value:
        raise ConfigError(key, f"must be a non-empty list, each {rule.describe()}; got {value!r}", rule.hint)
    for item in value:
        if not rule.accepts(item):
            raise ConfigError(key, f"every element must be {rule.describe()}, got {item!r} in {value}", rule.hint)


def _check_stage(stage: Any) -> None:
    if stage not in STAGES:
        raise ConfigError("stage", f"unknown stage {stage!r}", f"choose one of {list(STAGES)}")


def _check_resolves(cfg: DictConfig) -> None:
    """Every value must exist and resolve: a '???' left unset (dataset.corpus.path of the Hub sets) or an
    interpolation that fails (self_synth's instruction count from train.max_examples=null) would
    otherwise fail deep inside a stage."""
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))  # resolves every interpolation on the way
    except InterpolationResolutionError as exc:
        reason = str(exc.msg).splitlines()[0]  # the resolver's own words, without OmegaConf's key trailer
        raise ConfigError(str(exc.full_key), f"does not resolve: {reason}") from None
    if missing:
        raise ConfigError(missing[0], "is mandatory and not set (???)",
                          "set it on the command line" + (f"; also unset: {missing[1:]}" if missing[1:] else ""))


def _check_training_budget(cfg: DictConfig) -> None:
    """Lightning reads max_steps=-1 with max_epochs=-1 as 'train forever'."""
    steps, epochs = _lookup(cfg, "trainer.max_steps"), _lookup(cfg, "trainer.max_epochs")
    if steps == -1 and epochs in (-1, None):
        raise ConfigError("trainer.max_steps", f"is -1 with trainer.max_epochs={epochs}: training would never stop",
                          "give trainer.max_steps or trainer.max_epochs a positive limit, e.g. trainer.max_steps=100")


def _check_top_k(cfg: DictConfig) -> None:
    """Closed book (retriever=none) retrieves nothing on purpose; every other retriever needs top_k >= 1."""
    if _lookup(cfg, "retriever.impl._target_") == CLOSED_BOOK:
        rule = replace(COUNT, hint="retriever=none puts no passages into the prompt: top_k 0")
    else:
        rule = replace(POSITIVE_INT, hint="the passages per prompt, e.g. 3; retriever=none for closed book")
    check_number("retriever.top_k", _lookup(cfg, "retriever.top_k"), rule)


def declared_splits(dataset: DictConfig) -> list[str] | None:
    """The split names a dataset config declares, or None when only preparing the data would tell."""
    qa = dataset.qa
    for key in SPLIT_KEYS:
        if isinstance(qa.get(key), DictConfig):
            return [str(name) for name in qa[key]]
    fixed = FIXED_SPLITS.get(str(qa.get("_target_")))
    return list(fixed) if fixed else None


def _train_split_use(cfg: DictConfig) -> tuple[str, str] | None:
    """(what reads the training split, how to do without it), or None when this job does not read it."""
    if cfg.stage == "all" and cfg.method.get("trains", True):
        return (f"method={cfg.method.name} trains on it", "evaluate this dataset with method=base or "
                "stage=evaluate checkpoint=<folder>, or train on another dataset, e.g. dataset=squad_open")
    if _lookup(cfg, "retriever.impl.stage1") is not _ABSENT and not _lookup(cfg, "retriever.impl.adapter"):
        return (f"retriever={cfg.retriever.name} trains its retriever adapter on it",
                "give a trained one with retriever.impl.adapter=<folder or runs:/ URI>")
    return None


def _check_splits(cfg: DictConfig) -> None:
    dataset = cfg.dataset
    splits = declared_splits(dataset)
    if splits is not None:
        where = f"dataset '{dataset.name}' defines the splits {splits}"
        if dataset.eval_split not in splits:
            raise ConfigError("dataset.eval_split", f"is {dataset.eval_split!r}, but {where}", "pick one of them")
        if dataset.train_split is not None and dataset.train_split not in splits:
            raise ConfigError("dataset.train_split", f"is {dataset.train_split!r}, but {where}",
                              "pick one of them, or null for an evaluation-only dataset")
    use = _train_split_use(cfg)
    if dataset.train_split is None and use:
        raise ConfigError("dataset.train_split", f"is null (dataset '{dataset.name}' has no training split), "
                          f"but {use[0]}", use[1])


def _check_checkpoint(cfg: DictConfig) -> None:
    if cfg.stage != "evaluate":
        return
    example = "e.g. checkpoint=outputs/runs/<run>/<time>/checkpoint"
    if not cfg.get("checkpoint"):
        raise ConfigError("checkpoint", "stage=evaluate needs the checkpoint folder to evaluate, got none", example)
    folder = Path(cfg.checkpoint)
    if not folder.is_dir():
        raise ConfigError("checkpoint", f"{folder} does not exist (or is not a folder)", example)
    missing = [part for part in CHECKPOINT_PARTS if not (folder / part).exists()]
    if missing:
        hint = (f"did you mean {folder / 'checkpoint'}?" if (folder / "checkpoint").is_dir()
                else f"pass the checkpoint/ folder a training run wrote, {example}")
        raise ConfigError("checkpoint", f"{folder} holds no {missing}: it is not a checkpoint folder", hint)


def _check_retention(cfg: DictConfig) -> None:
    tasks = _lookup(cfg, "eval.retention.tasks")
    if not isinstance(tasks, list) or not all(isinstance(task, str) for task in tasks):
        raise ConfigError("eval.retention.tasks", f"must be a list of task names, got {tasks!r}",
                          "[] skips the retention suite")
    if _lookup(cfg, "eval.retention._target_") == OFFLINE_SUITE:
        validate_tasks(tasks)


def _check_trainer_parts(cfg: DictConfig) -> None:
    """``callbacks`` and ``lightning_loggers``: each entry null (switched off) or a mapping whose ``_target_``
    names a Lightning callback or logger class, and one progress bar at most. A wrong entry would otherwise
    fail only when the Trainer is built, after the assets, the retrieval and the method's data."""
    from hydra.utils import get_class
    from lightning.pytorch.callbacks import ProgressBar

    bars = []
    for section, kind in TRAINER_PARTS.items():
        entries = _lookup(cfg, section)
        if entries is _ABSENT or entries is None:
            continue
        if not isinstance(entries, dict):
            raise ConfigError(section, f"must map names to {{_target_: ...}} entries, got {entries!r}",
                              f"e.g. +{section}.<name>._target_=<module.Class>")
        for name, entry in entries.items():
            key = f"{section}.{name}"
            if entry is None:
                continue
            target = entry.get("_target_") if isinstance(entry, dict) else None
            if not isinstance(target, str):
                raise ConfigError(key, f"has no _target_ (got {entry!r})",
                                  f"name the class with +{key}._target_=<module.Class>, or drop it with {key}=null")
            try:
                cls = get_class(target)
            except (ImportError, ValueError) as exc:
                raise ConfigError(f"{key}._target_", f"{target!r} is not an importable class ({exc})",
                                  "give its full import path, e.g. lightning.pytorch.callbacks.EarlyStopping") from None
            if not issubclass(cls, kind):
                raise ConfigError(f"{key}._target_", f"{target} is not a {kind.__module__}.{kind.__qualname__}",
                                  f"{section} takes Lightning {kind.__qualname__} classes")
            if issubclass(cls, ProgressBar):
                bars.append(key)
    if len(bars) > 1:
        raise ConfigError("callbacks", f"adds {len(bars)} progress bars ({', '.join(bars)}): the Trainer shows one",
                          f"drop all but one, e.g. {bars[-1]}=null")
    if bars and _lookup(cfg, "trainer.enable_progress_bar") is False:
        raise ConfigError("trainer.enable_progress_bar", f"is false, but {bars[0]} adds a progress bar",
                          f"drop it with {bars[0]}=null, or callbacks=none")


def _check_objective(cfg: DictConfig, sweeping: bool) -> None:
    """The sweeper's objective: a weighted sum of metrics this job must produce."""
    metrics, weights = _lookup(cfg, "objective.metrics"), _lookup(cfg, "objective.weights")
    if metrics is _ABSENT and weights is _ABSENT:
        return
    if not isinstance(metrics, list) or not all(isinstance(name, str) for name in metrics):
        raise ConfigError("objective.metrics", f"must be a list of metric names, got {metrics!r}",
                          "e.g. [odqa/acc, retention/macro_avg]")
    if not isinstance(weights, list) or len(weights) != len(metrics):
        raise ConfigError("objective.weights", f"is {weights!r}, for the {len(metrics)} metric(s) {metrics}",
                          "give one weight per metric, e.g. objective.weights=[1.0, 1.0]")
    for weight in weights:
        check_number("objective.weights", weight, Number(hint="one number per metric of objective.metrics"))
    if sweeping:
        _check_objective_is_produced(cfg, metrics)


def _check_objective_is_produced(cfg: DictConfig, metrics: list[str]) -> None:
    """Under a sweep the objective is read at the end: a metric the job cannot produce fails every trial."""
    if not metrics:
        raise ConfigError("objective.metrics", "is empty, so the sweep has nothing to maximize",
                          "e.g. objective.metrics=[odqa/acc] objective.weights=[1.0]")
    retention = [name for name in metrics if name.startswith("retention/")]
    if retention and not _lookup(cfg, "eval.retention.tasks"):
        raise ConfigError("eval.retention.tasks", f"is empty, but the sweep's objective.metrics names {retention}, "
                          "which only the retention suite produces",
                          "give retention tasks, or sweep on objective.metrics=[odqa/acc] objective.weights=[1.0]")
