"""Every baseline runs end to end on the tiny model and lands in MLflow with its tag and hyperparameters."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from helpers import ROOT, compose_config, run_of, tiny_config
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from ragforget.errors import ConfigError
from ragforget.methods.build import build_method
from ragforget.methods.mofo import MoFO
from ragforget.pipeline import run_job
from ragforget.tracking.mlflow_run import flatten

# Every method config runs here unless a test named below runs it end to end (checked: the file must run it),
# so a new conf/method/<name>.yaml is tested without being listed anywhere.
ALL_METHODS = sorted(path.stem for path in (ROOT / "conf" / "method").glob("*.yaml"))
RUN_ELSEWHERE = {
    "base": "test_pipeline_e2e.py", "sft": "test_pipeline_e2e.py", "selfaug": "test_pipeline_e2e.py",
    "self_synth": "test_synth.py", "self_synth_1x1": "test_synth.py", "self_synth_1x3": "test_synth.py",
}
METHODS = [method for method in ALL_METHODS if method not in RUN_ELSEWHERE]
# One-off figures some methods report beside the usual metrics.
METHOD_METRICS = {"replay": ["replay/general_examples"], "sdft": ["sdft/kept_fraction", "sdft/cut_fraction"],
                  "ewc": ["ewc/fisher_s"]}
SMALL = ["general_data.max_rows=64", "method.transforms.sdft.max_new_tokens=8", "method.terms.ewc.num_samples=4"]


def hyperparameters(cfg: DictConfig) -> dict[str, object]:
    """The settings of the method's parts (conf/method/<name>.yaml), as the dotted MLflow params they are logged as."""
    node = OmegaConf.to_container(cfg.method, resolve=True)
    assert isinstance(node, dict)
    parts = {key: node[key] for key in ("terms", "transforms", "optimizer", "posthoc") if node.get(key)}
    return flatten(parts, "method.")  # sft and sft_full have no part: nothing to check


def small_overrides(method: str) -> list[str]:
    return [o for o in SMALL if o.startswith(("general_data", f"method.terms.{method}.",
                                              f"method.transforms.{method}."))]


def test_every_method_config_runs_end_to_end_somewhere() -> None:
    for method, test_file in RUN_ELSEWHERE.items():
        assert method in ALL_METHODS, f"{method} is listed as run elsewhere but has no conf/method/{method}.yaml"
        text = (ROOT / "tests" / test_file).read_text(encoding="utf-8")
        assert f"method={method}" in text or f'"{method}"' in text, f"{test_file} does not run method={method}"
    assert {"sft_full", "wise_ft", "mofo"} <= set(METHODS)  # listed nowhere, run here


def test_the_benchmark_measures_every_method_config_it_does_not_explain() -> None:
    spec = importlib.util.spec_from_file_location("method_cost", ROOT / "bench" / "method_cost.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up while it runs
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules[spec.name]
    assert sorted([*bench.METHODS, *bench.NOT_MEASURED]) == ALL_METHODS


@pytest.mark.parametrize("method", METHODS)
def test_method_runs_end_to_end_and_is_tracked(tmp_path: Path, method: str) -> None:
    cfg = tiny_config(tmp_path, f"method={method}", *small_overrides(method))
    workdir = tmp_path / "job"
    metrics = run_job(cfg, workdir)

    for name in ("odqa/acc", "retention/macro_avg", "shift/kl", "time/train_s", "time/method_setup_s",
                 *METHOD_METRICS.get(method, [])):
        assert name in metrics, name
    run = run_of(cfg, workdir)
    assert run.info.status == "FINISHED" and run.data.tags["method"] == method
    for key, value in hyperparameters(cfg).items():
        assert run.data.params[key] == str(value), key


def test_wise_ft_logs_one_run_per_weight_linked_to_the_trained_run(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "method=wise_ft", "method.posthoc.weights=[0.0,0.5,1.0]")
    workdir = tmp_path / "job"
    trained_metrics = run_job(cfg, workdir)
    trained = run_of(cfg, workdir)
    client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
    children = client.search_runs([trained.info.experiment_id],
                                  f"tags.trained_run_id = '{trained.info.run_id}'")
    by_weight = {float(r.data.params["method.posthoc.weight"]): r for r in children}
    assert sorted(by_weight) == [0.0, 0.5, 1.0]
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == trained.info.run_id
        assert run.data.tags["method"] == "wise_ft"
    # w=1 is the trained model itself; w=0 is the starting model, so ODQA matches the base evaluation.
    assert by_weight[1.0].data.metrics["odqa/acc"] == pytest.approx(trained_metrics["odqa/acc"])
    zero = by_weight[0.0].data.metrics
    assert zero["odqa/acc"] == pytest.approx(zero["base/odqa/acc"])
    assert zero["shift/kl"] == pytest.approx(0.0, abs=1e-6)
    assert by_weight[0.5].data.metrics["shift/kl"] > 0


@pytest.mark.parametrize(("combo", "parts"), [
    ("[selfaug,replay]", {"terms": {"selfaug"}, "transforms": {"replay"}}),
    ("[output_kl,l2sp,mofo]", {"terms": {"output_kl", "l2sp"}, "transforms": set()}),
    ("[sdft,wise_ft]", {"terms": set(), "transforms": {"sdft"}}),
    ("selfaug_replay", {"terms": {"selfaug"}, "transforms": {"replay"}}),  # the ready-made combination
])
def test_methods_compose_by_listing_their_configs(combo: str, parts: dict[str, set[str]]) -> None:
    named = combo.startswith("[")
    cfg = compose_config([f"method={combo}"] + (["method.name=combo"] if named else []))
    method = build_method(cfg.method)
    assert method.name == ("combo" if named else combo)
    assert set(method.terms) == parts["terms"] and set(method.transforms) == parts["transforms"]
    assert (getattr(method.optimizer, "func", None) is MoFO) == ("mofo" in combo)
    assert ("wise_ft" in combo) == (method.posthoc is not None)


@pytest.mark.parametrize(("method", "override", "key"), [
    ("selfaug", "method.terms.selfaug.weight=-0.1", "method.terms.selfaug.weight"),
    ("output_kl", "method.terms.output_kl.weight=-1", "method.terms.output_kl.weight"),
    ("l2sp", "method.terms.l2sp.weight=-1", "method.terms.l2sp.weight"),
    ("replay", "method.transforms.replay.ratio=1.5", "method.transforms.replay.ratio"),
    ("mofo", "method.optimizer.fraction=0", "method.optimizer.fraction"),
    ("wise_ft", "method.posthoc.weights=[0.5,2.0]", "method.posthoc.weights"),
])
def test_bad_method_settings_fail_before_anything_runs(tmp_path: Path, method: str, override: str, key: str) -> None:
    cfg = tiny_config(tmp_path, f"method={method}", override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_job(cfg, tmp_path / "job")
    assert not (tmp_path / "job" / "checkpoint").exists()
