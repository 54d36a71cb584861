"""train -> checkpoint -> evaluate -> MLflow on the tiny model, through the real pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY_TRAIN, compose_config, run_of, tiny_config
from mlflow.tracking import MlflowClient

from ragforget.models.loading import starting_model_key
from ragforget.pipeline import run_job
from ragforget.training.checkpoint import load_checkpoint_folder
from ragforget.training.module import RagFineTuner


@pytest.mark.parametrize("method", ["sft", "selfaug"])
def test_train_checkpoint_evaluate_mlflow(tmp_path: Path, method: str) -> None:
    cfg = tiny_config(tmp_path, f"method={method}")
    workdir = tmp_path / "job"
    metrics = run_job(cfg, workdir)

    for name in ("odqa/em", "odqa/f1", "odqa/acc", "retrieval/recall_at_1", "retrieval/recall_at_2",
                 "retention/wiki_ppl", "retention/macro_avg", "retention/delta_macro_avg", "shift/kl",
                 "time/train_s", "time/eval_s", "base/odqa/acc"):
        assert name in metrics, name
    assert metrics["shift/kl"] > 0  # four steps at lr 1e-3 move the adapters
    # Paired against the base model on the same items: the delta is the difference of the two scores.
    for name in ("odqa/acc", "odqa/f1", "retention/wiki_ppl", "retention/macro_avg"):
        delta = metrics[f"{name}/delta"]
        assert delta == pytest.approx(metrics[name] - metrics[f"base/{name}"], abs=1e-9), name
        assert metrics[f"{name}/delta_lo"] <= delta <= metrics[f"{name}/delta_hi"] and metrics[f"{name}/mde"] >= 0
    assert (workdir / "eval" / "item_scores.json").exists()

    run = run_of(cfg, workdir)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"{method}-tiny_random-squad_open-s0"
    assert run.data.tags["method"] == method and run.data.tags["retriever"] == "bm25"
    assert run.data.params["method.name"] == method
    assert run.data.metrics["odqa/acc"] == pytest.approx(metrics["odqa/acc"])
    client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/nll")]  # training curve
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "eval", "checkpoint"} <= artifacts

    model, _, saved_cfg = load_checkpoint_folder(workdir / "checkpoint")
    assert saved_cfg.method.name == method and hasattr(model, "peft_config")
    assert (workdir / "eval" / "predictions.jsonl").exists()


def test_base_method_evaluates_the_starting_model_without_training(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "method=base")
    metrics = run_job(cfg, tmp_path / "job")
    assert "time/train_s" not in metrics
    assert metrics["odqa/acc"] == metrics["base/odqa/acc"]
    assert not (tmp_path / "job" / "checkpoint" / "adapter").exists()
    client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
    run_id = run_of(cfg, tmp_path / "job").info.run_id
    assert "eval/predictions.jsonl" in {a.path for a in client.list_artifacts(run_id, "eval")}


def test_runs_that_differ_only_in_lora_share_the_base_model_caches(tmp_path: Path) -> None:
    def key(*overrides: str) -> dict:
        return starting_model_key(tiny_config(tmp_path, *overrides).model)

    assert key("model.lora.r=4") == key("model.lora.r=64", "model.lora.alpha=128") == key("model.lora=null")
    assert key() != key("model.dtype=bfloat16")  # other weights: another base evaluation


def test_interrupted_run_resumes_into_the_same_mlflow_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(tmp_path)
    workdir = tmp_path / "job"
    original = RagFineTuner.training_step

    def crash_at_step_3(self: RagFineTuner, batch, batch_idx):  # noqa: ANN001, ANN202
        if self.trainer.global_step == 3:
            raise RuntimeError("simulated crash")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(RagFineTuner, "training_step", crash_at_step_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_job(cfg, workdir)
    first = run_of(cfg, workdir)
    assert first.info.status == "FAILED" and "simulated crash" in first.data.tags["error"]
    assert (workdir / "lightning" / "last.ckpt").exists()

    resumed_steps: list[int] = []

    def record_start(self: RagFineTuner, batch, batch_idx):  # noqa: ANN001, ANN202
        resumed_steps.append(self.trainer.global_step)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(RagFineTuner, "training_step", record_start)
    run_job(compose_config([*TINY_TRAIN, f"paths.output_dir={tmp_path}", f"resume_dir={workdir}"]), tmp_path / "other")
    assert resumed_steps[0] == 2, "training continues from the step-2 checkpoint, not from scratch"
    second = run_of(cfg, workdir)
    assert second.info.run_id == first.info.run_id and second.info.status == "FINISHED"


@pytest.mark.parametrize("retriever", ["oracle", "none"])
def test_other_retrievers_run_end_to_end(tmp_path: Path, retriever: str) -> None:
    cfg = tiny_config(tmp_path, f"retriever={retriever}", "trainer.max_steps=2")
    metrics = run_job(cfg, tmp_path / "job")
    if retriever == "oracle":  # the gold passage is always among the top k
        assert metrics["retrieval/recall_at_2"] >= 5 / 6  # answer-in-passage: a rare SQuAD span ends mid-word
    else:  # closed book: no passages, no recall
        assert not any(name.startswith("retrieval/") for name in metrics)
    assert run_of(cfg, tmp_path / "job").data.tags["retriever"] == retriever


def test_forgetting_curves_start_at_the_base_model_and_leave_training_unchanged(tmp_path: Path) -> None:
    """during/* at steps 0, 2 and 4; at step 0 (LoRA's B = 0) the model is its base: no shift, and the
    held-out text scores what the base model scores on the same items. Training is bit-identical without them."""
    from ragforget.evaluation.retention.runner import evaluate_retention
    from ragforget.models.loading import load_model, load_tokenizer
    from ragforget.prepare import prepare_assets

    cfg = tiny_config(tmp_path, "method=selfaug", "model.lora.dropout=0.1", "eval.during_training.every_n_steps=2",
                      "eval.during_training.limit=3")
    metrics = run_job(cfg, tmp_path / "with")
    run = run_of(cfg, tmp_path / "with")
    client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
    curves = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
              for key in ("during/shift_kl", "during/wiki_ppl/bits_per_byte")}
    assert all(sorted(points) == [0, 2, 4] for points in curves.values()), curves
    assert curves["during/shift_kl"][0] == 0.0 and curves["during/shift_kl"][4] > 0
    assets = prepare_assets(cfg)
    base = evaluate_retention(load_model(assets.model_path), load_tokenizer(assets.model_path),
                              assets.retention.task_dir, ["wiki_ppl"], limit=3, bootstrap_iters=0)
    assert curves["during/wiki_ppl/bits_per_byte"][0] == pytest.approx(base.metrics["wiki_ppl/bits_per_byte"], rel=1e-6)
    assert 0 < metrics["time/during_s"] < metrics["time/train_s"]

    without = run_job(tiny_config(tmp_path, "method=selfaug", "model.lora.dropout=0.1",
                                  "eval.during_training.every_n_steps=null", "logger.experiment_name=off"),
                      tmp_path / "without")
    assert "time/during_s" not in without
    adapter = "checkpoint/adapter/adapter_model.safetensors"
    assert (tmp_path / "with" / adapter).read_bytes() == (tmp_path / "without" / adapter).read_bytes()


def test_resumed_curves_continue_after_the_last_logged_step_of_any_measure() -> None:
    """A full fine-tuning run (no adapters: no shift) on the held-out text alone logs only
    during/wiki_ppl/bits_per_byte; resumed at step 5, it must know that step 4 is already logged."""
    from types import SimpleNamespace

    import torch

    from ragforget.evaluation.during_training import ForgettingCurves

    logged = {"during/wiki_ppl/bits_per_byte": 4}
    run = SimpleNamespace(last_step=lambda key: logged.get(key, -1))
    curves = ForgettingCurves(run, None, every_n_steps=2, shift_prompts=[], task_dir=None,  # type: ignore[arg-type]
                              tasks=["wiki_ppl"], limit=2, shift_max_tokens=8, batch_size=2)
    trainer = SimpleNamespace(world_size=1, global_step=5)
    curves.on_train_start(trainer, SimpleNamespace(model=torch.nn.Linear(2, 2)))  # type: ignore[arg-type]
    assert curves._last_step == 4
