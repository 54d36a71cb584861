"""Every file under conf/ composes and resolves; methods and retriever impls build to the right types."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import pytest
from helpers import compose_config
from hydra.errors import HydraException
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from ragforget.errors import ConfigError
from ragforget.invar.retriever import InvarRetriever
from ragforget.methods.base import Method
from ragforget.methods.build import build_method
from ragforget.methods.selfaug import InputKL
from ragforget.retrieval.base import Retriever
from ragforget.retrieval.bm25 import BM25Retriever
from ragforget.retrieval.closed_book import ClosedBookRetriever
from ragforget.retrieval.dense import DenseRetriever
from ragforget.retrieval.oracle import OracleRetriever
from ragforget.utils.instantiate import instantiate as keyed_instantiate

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["model", "dataset", "retriever", "general_data", "method", "trainer", "callbacks", "eval", "logger",
          "lightning_loggers", "paths", "experiment", "report", "hparams_search"]

# Options whose config has a mandatory (???) value the user must supply on the command line.
REQUIRED_OVERRIDES: dict[str, list[str]] = {
    "model=hf": ["model.name_or_path=Qwen/Qwen2.5-7B-Instruct"],
    "dataset=nq_open": ["dataset.corpus.path=/tmp/x.jsonl"],
    "dataset=popqa": ["dataset.corpus.path=/tmp/x.jsonl"],
    "dataset=triviaqa": ["dataset.corpus.path=/tmp/x.jsonl"],
}


def _options() -> list[str]:
    return [f"{group}={path.stem}" for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def _targets(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, _target_) for every node that instantiates something."""
    if isinstance(node, DictConfig):
        for k in node.keys():
            if k == "_target_":
                yield key, node[k]
            else:
                yield from _targets(node._get_node(k), f"{key}.{k}" if key else str(k))
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            yield from _targets(node._get_node(i), f"{key}[{i}]")


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert list((CONF / group).glob("*.yaml")), f"conf/{group} has no options"
    assert "model=tiny_random" in _options() and "method=selfaug" in _options()


@pytest.mark.parametrize("option", _options())
def test_option_composes_and_resolves(option: str) -> None:
    cfg = compose_config([option, *REQUIRED_OVERRIDES.get(option, [])])
    OmegaConf.resolve(cfg)
    assert OmegaConf.missing_keys(cfg) == set(), f"{option} leaves mandatory values unset"
    group, name = option.split("=")
    if group not in ("experiment", "paths", "hparams_search"):
        assert cfg[group] is not None
    # every _target_ points at something importable (nothing is instantiated here)
    for key, target in _targets(cfg):
        assert callable(get_method(target)), f"{option}: {key}._target_={target} is not callable"


@pytest.mark.parametrize("option", sorted(REQUIRED_OVERRIDES))
def test_mandatory_values_are_reported_without_override(option: str) -> None:
    cfg = compose_config([option])
    OmegaConf.resolve(cfg)  # missing values stay missing; resolving must not hide them
    assert OmegaConf.missing_keys(cfg), f"{option} should need an override"


def test_default_composition() -> None:
    cfg = compose_config()
    assert cfg.method.name == "sft"
    assert cfg.model.name == "smollm2_135m"
    assert cfg.dataset.name == "squad_open"
    assert cfg.retriever.name == "bm25"
    assert cfg.run_name == "sft-smollm2_135m-squad_open-s0"
    assert cfg.stage == "all"
    assert cfg.checkpoint is None


def test_hf_model_name_is_the_basename() -> None:
    cfg = compose_config(["model=hf", "model.name_or_path=Qwen/Qwen2.5-7B-Instruct"])
    assert cfg.model.name == "Qwen2.5-7B-Instruct"
    assert cfg.model.source.name_or_path == "Qwen/Qwen2.5-7B-Instruct"


def test_unknown_option_lists_choices() -> None:
    with pytest.raises(HydraException) as info:
        compose_config(["method=nonexistent"])
    message = str(info.value)
    assert "method/nonexistent" in message
    for choice in ("base", "sft", "selfaug"):
        assert choice in message


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "method").glob("*.yaml")))
def test_method_config_builds(name: str) -> None:
    cfg = compose_config([f"method={name}"])
    method = build_method(cfg.method)
    assert isinstance(method, Method)
    assert method.name == name == cfg.method.name and method.config_key == "method"


def test_method_details() -> None:
    base = build_method(compose_config(["method=base"]).method)
    assert base.trains is False and base.terms == {} and not base.needs_reference
    sft = build_method(compose_config(["method=sft"]).method)
    assert sft.trains is True and sft.terms == {} and not sft.needs_reference
    selfaug = build_method(compose_config(["method=selfaug"]).method)
    assert selfaug.trains is True
    assert set(selfaug.terms) == {"selfaug"}
    term = selfaug.terms["selfaug"]
    assert isinstance(term, InputKL)
    assert term.weight == 0.5
    assert term.direction == "forward"
    assert selfaug.needs_reference


def test_selfaug_alpha_override_reaches_the_term() -> None:
    method = build_method(compose_config(["method=selfaug", "method.terms.selfaug.weight=0.3"]).method)
    assert method.terms["selfaug"].weight == pytest.approx(0.3)


# --- the key of a bad value: where the user set it ------------------------------------------------

@pytest.mark.parametrize(("method", "override", "key"), [
    ("selfaug", "method.terms.selfaug.weight=-1", "method.terms.selfaug.weight"),        # LossTerm's own check
    ("selfaug", "method.terms.selfaug.direction=up", "method.terms.selfaug.direction"),   # InputKL's
    ("mofo", "method.optimizer.fraction=0", "method.optimizer.fraction"),                # a partial, called by Method
    ("self_synth", "method.transforms.self_synth.source.judge.threshold=6",              # a nested part's setting
     "method.transforms.self_synth.source.judge.threshold"),
    ("selfaug", "+method.alpha=0.3", "method.alpha"),                                    # not a part, not a setting
])
def test_a_bad_value_in_a_part_names_the_key_the_user_set(method: str, override: str, key: str) -> None:
    cfg = compose_config([f"method={method}", override])
    with pytest.raises(ConfigError) as error:
        build_method(cfg.method)
    assert error.value.key == key and not error.value.relative
    assert str(error.value).startswith(f"config key '{key}': ")


def test_a_composed_method_names_the_key_of_each_part() -> None:
    cfg = compose_config(["method=[selfaug,replay]", "method.name=both", "method.transforms.replay.ratio=2"])
    with pytest.raises(ConfigError, match=r"^config key 'method\.transforms\.replay\.ratio': must be in \[0, 1\]"):
        build_method(cfg.method)


def test_absolute_keys_stay_absolute_and_detached_nodes_stay_relative() -> None:
    """A key a part names on purpose (train.lr) is not prefixed; a node that does not know its place (a plain
    mapping) leaves the key relative for whoever instantiates the node around it."""
    cfg = OmegaConf.create({"method": {"optimizer": {"_target_": "ragforget.methods.mofo.MoFO", "params": [],
                                                     "lr": -1.0, "fraction": 0.5}}})
    with pytest.raises(ConfigError) as error:
        keyed_instantiate(cfg.method.optimizer)
    assert error.value.key == "train.lr" and not error.value.relative
    with pytest.raises(ConfigError) as error:
        keyed_instantiate({"_target_": "ragforget.methods.l2sp.L2SP", "weight": -1.0})
    assert error.value.key == "weight" and error.value.relative


def test_a_relative_key_raised_while_a_part_works_is_named_under_the_part() -> None:
    """Method names the ConfigErrors its transforms raise at work under their node (method.transforms.<name>)."""
    from ragforget.methods.base import DataTransform

    class TooMany(DataTransform):
        def __call__(self, examples: list[Any], context: Any) -> list[Any]:
            raise ConfigError("ratio", "asks for more general examples than there are RAG ones", relative=True)

    method = Method("m", transforms={"mix": TooMany()}, config_key="method")
    with pytest.raises(ConfigError) as error:
        method.transform_data([], None)  # type: ignore[arg-type]
    assert error.value.key == "method.transforms.mix.ratio" and not error.value.relative


@pytest.mark.parametrize(
    ("name", "cls"),
    [("bm25", BM25Retriever), ("dense", DenseRetriever), ("none", ClosedBookRetriever),
     ("oracle", OracleRetriever), ("invar", InvarRetriever)],
)
def test_retriever_impl_instantiates(name: str, cls: type) -> None:
    cfg = compose_config([f"retriever={name}"])
    retriever = instantiate(cfg.retriever.impl)
    assert isinstance(retriever, cls)
    assert isinstance(retriever, Retriever)


def test_every_retriever_file_is_covered() -> None:
    assert sorted(p.stem for p in (CONF / "retriever").glob("*.yaml")) == ["bm25", "dense", "invar", "none", "oracle"]


def test_quick_experiment_is_smaller() -> None:
    default = compose_config()
    quick = compose_config(["experiment=quick"])
    assert quick.trainer.max_steps < default.trainer.max_steps
    assert quick.train.max_examples < default.train.max_examples
    assert quick.eval.odqa.max_questions < default.eval.odqa.max_questions
    # the experiment only shrinks budgets; it does not change what is compared
    assert quick.method.name == default.method.name and quick.model.name == default.model.name


def test_gpu_trainer_extends_cpu() -> None:
    cfg = compose_config(["trainer=gpu"])
    assert cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.max_steps == compose_config().trainer.max_steps
    assert cfg.trainer._target_ == "lightning.Trainer"


def test_hydra_run_dir_uses_run_name() -> None:
    with hydra.initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra.compose(config_name="config", return_hydra_config=True)
    assert "${run_name}" in OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]


def hydra_composed(*overrides: str) -> DictConfig:
    with hydra.initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra.compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


# Each ready sweep, and the report that reads it: the report's columns must select every swept value.
SWEEPS = {
    "selfaug_table1": ("method", "tags", "method"),
    "selfaug_alpha": ("method.terms.selfaug.weight", "params", "method.terms.selfaug.weight"),
    "context_length": ("retriever.top_k", "params", "retriever.top_k"),
    "lora_rank": ("model.lora.r", "params", "model.lora.r"),
}


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_ready_sweeps_compose_and_their_report_covers_them(name: str) -> None:
    cfg = hydra_composed(f"experiment={name}")
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.logger.experiment_name == name
    # the quick budget: minutes per run on 2 CPU cores
    assert cfg.trainer.max_steps == 30 and cfg.eval.retention.tasks == ["hhh_alignment", "qa_wikidata",
                                                                         "ifeval_like", "wiki_ppl"]
    swept, where, key = SWEEPS[name]
    values = str(cfg.hydra.sweeper.params[swept]).split(",")
    report = compose_config([f"report={name}"]).report
    assert report.experiment == name
    selected = {str(column[where][key]) for column in report.columns if key in column.get(where, {})}
    assert selected == set(values), f"report={name} columns select {selected}, the sweep runs {values}"
    seeds = str(cfg.hydra.sweeper.params.seed).split(",")
    assert [str(s) for s in report.seeds] == seeds


def test_full_sft_trains_every_weight_in_fp32() -> None:
    cfg = compose_config(["method=sft_full"])
    assert cfg.method.name == "sft_full" and cfg.model.lora is None and cfg.model.dtype == "float32"
    assert cfg.train.lr < compose_config().train.lr


def test_lora_rank_sweep_keeps_the_update_scale() -> None:
    cfg = compose_config(["experiment=lora_rank", "model.lora.r=64"])
    assert cfg.model.lora.alpha == 128


def test_optuna_search_space_and_objective() -> None:
    cfg = hydra_composed("hparams_search=selfaug_optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"method.terms.selfaug.weight", "train.lr"} and cfg.method.name == "selfaug"
    assert list(cfg.objective.metrics) == ["odqa/acc", "retention/macro_avg"]
