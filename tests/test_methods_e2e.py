"""Every baseline runs end to end on the tiny model and lands in MLflow with its tag and hyperparameters."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import compose_config
from ragforget.errors import ConfigError
from ragforget.methods.mofo import MoFO
from ragforget.pipeline import run_job
from test_pipeline_e2e import run_of, tiny_config

# One-off figures each method reports beside the usual metrics.
METHOD_METRICS = {
    "output_kl": [],
    "replay": ["replay/general_examples"],
    "sdft": ["sdft/kept_fraction"],
    "l2sp": [],
    "ewc": ["ewc/fisher_s"],
    "orthogonal": [],
    "mofo": [],
    "wise_ft": [],
}
SMALL = ["general_data.max_rows=64", "method.sdft.max_new_tokens=8", "method.ewc.num_samples=4"]


def hyperparameters(method: str) -> dict[str, object]:
    """The settings under method.<name> in the method's config, as dotted MLflow param names."""
    cfg = compose_config([f"method={method}"])
    node = OmegaConf.to_container(cfg.method[method], resolve=True)
    assert isinstance(node, dict) and node, f"conf/method/{method}.yaml keeps its settings under '{method}:'"
    return {f"method.{method}.{key}": value for key, value in node.items()}


def small_overrides(method: str) -> list[str]:
    return [o for o in SMALL if o.startswith(("general_data", f"method.{method}."))]


@pytest.mark.parametrize("method", sorted(METHOD_METRICS))
def test_method_runs_end_to_end_and_is_tracked(tmp_path: Path, method: str) -> None:
    cfg = tiny_config(tmp_path, f"method={method}", *small_overrides(method))
    workdir = tmp_path / "job"
    metrics = run_job(cfg, workdir)

    for name in ("odqa/acc", "retention/macro_avg", "shift/kl", "time/train_s", "time/method_setup_s",
                 *METHOD_METRICS[method]):
        assert name in metrics, name
    run = run_of(cfg, workdir)
    assert run.info.status == "FINISHED" and run.data.tags["method"] == method
    for key, value in hyperparameters(method).items():
        if key.startswith(("method.sdft.max_new_tokens", "method.ewc.num_samples")):
            continue  # shrunk for the test
        assert run.data.params[key] == str(value), key


def test_wise_ft_logs_one_run_per_weight_linked_to_the_trained_run(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "method=wise_ft", "method.wise_ft.weights=[0.0,0.5,1.0]")
    workdir = tmp_path / "job"
    trained_metrics = run_job(cfg, workdir)
    trained = run_of(cfg, workdir)
    client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
    children = client.search_runs([trained.info.experiment_id],
                                  f"tags.trained_run_id = '{trained.info.run_id}'")
    by_weight = {float(r.data.params["method.wise_ft.weight"]): r for r in children}
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
    ("[selfaug,replay]", {"terms": {"input_kl"}, "transforms": {"replay"}}),
    ("[output_kl,l2sp,mofo]", {"terms": {"output_kl", "l2sp"}, "transforms": set()}),
    ("[sdft,wise_ft]", {"terms": set(), "transforms": {"sdft"}}),
    ("selfaug_replay", {"terms": {"input_kl"}, "transforms": {"replay"}}),  # the ready-made combination
])
def test_methods_compose_by_listing_their_configs(combo: str, parts: dict[str, set[str]]) -> None:
    named = combo.startswith("[")
    cfg = compose_config([f"method={combo}"] + (["method.name=combo"] if named else []))
    method = instantiate(cfg.method.impl)
    assert method.name == ("combo" if named else combo)
    assert set(method.terms) == parts["terms"] and set(method.transforms) == parts["transforms"]
    assert (getattr(method.optimizer, "func", None) is MoFO) == ("mofo" in combo)
    assert ("wise_ft" in combo) == (method.posthoc is not None)


@pytest.mark.parametrize(("override", "key"), [
    ("method.selfaug.alpha=-0.1", "method.selfaug.alpha"),
    ("method.output_kl.beta=-1", "method.output_kl.beta"),
    ("method.l2sp.alpha=-1", "method.l2sp.alpha"),
    ("method.replay.ratio=1.5", "method.replay.ratio"),
    ("method.mofo.fraction=0", "method.mofo.fraction"),
    ("method.wise_ft.weights=[0.5,2.0]", "method.wise_ft.weights"),
])
def test_bad_method_settings_fail_before_anything_runs(tmp_path: Path, override: str, key: str) -> None:
    method = override.split(".")[1]
    cfg = tiny_config(tmp_path, f"method={method}", override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_job(cfg, tmp_path / "job")
    assert not (tmp_path / "job" / "checkpoint").exists()
