"""The training loop on the tiny model: the reference pass, method parts, the Trainer's configured callbacks."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import compose_config
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

from ragforget.data.rag_examples import TrainingExample
from ragforget.errors import ConfigError
from ragforget.methods.base import DataTransform, Method, MethodContext, StepTensors
from ragforget.methods.selfaug import InputKL
from ragforget.models.head import final_hidden
from ragforget.models.loading import attach_lora, load_model, load_tokenizer
from ragforget.training.reference import ReferenceModel
from ragforget.training.train import build_trainable_model, fit
from ragforget.validation import validate_config


def _batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    ids = torch.randint(10, 1000, (2, 12))
    labels = torch.full((2, 12), -100)
    labels[:, 9:11] = ids[:, 9:11]
    attention = torch.ones(2, 12, dtype=torch.long)
    attention[1, 11] = 0
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def _with_dropout(path: str) -> torch.nn.Module:
    """The tiny model with attention dropout: its outputs in train mode are random."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, attention_dropout=0.5)


def _adapted_model(path: str, dropout: float) -> torch.nn.Module:
    """LoRA with non-zero B (so the adapters change the outputs), dropout in the base and the adapters."""
    cfg = compose_config(["model=tiny_random"])
    model = attach_lora(_with_dropout(path), {**cfg.model.lora, "dropout": dropout})
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return model


def _base_hidden(path: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return final_hidden(load_model(path), batch).hidden  # the starting weights, eval mode


def test_reference_pass_is_the_base_model_with_dropout_off(tiny_model_path: str) -> None:
    model = _adapted_model(tiny_model_path, dropout=0.5)
    model.train()  # dropout on: the reference pass must switch it off by itself
    batch = _batch()
    reference = ReferenceModel(model).outputs(batch)
    assert model.training, "the reference pass must restore train mode"
    expected = _base_hidden(tiny_model_path, batch)
    with torch.no_grad():
        model.eval()
        adapted = final_hidden(model, batch).hidden
    assert not torch.allclose(adapted, expected, atol=1e-4)  # the adapters matter...
    torch.testing.assert_close(reference.hidden, expected, atol=1e-6, rtol=1e-6)  # ...and are off, dropout too
    torch.testing.assert_close(reference.head.weight, load_model(tiny_model_path).get_output_embeddings().weight)


def test_selfaug_kl_is_zero_exactly_when_policy_is_the_reference(tiny_model_path: str) -> None:
    model = _adapted_model(tiny_model_path, dropout=0.0).eval()
    batch = _batch()
    reference = ReferenceModel(model).outputs(batch)
    step = StepTensors(batch=batch, policy=final_hidden(model, batch), reference=reference, model=model)
    assert InputKL(weight=0.5, direction="forward")(step).item() > 1e-6
    with model.disable_adapter():
        step = StepTensors(batch=batch, policy=final_hidden(model, batch), reference=reference, model=model)
        assert InputKL(weight=0.5, direction="forward")(step).item() == pytest.approx(0.0, abs=1e-7)


def test_full_finetuning_reference_is_a_frozen_copy_with_dropout_off(tiny_model_path: str) -> None:
    model = _with_dropout(tiny_model_path).train()  # Lightning puts every submodule in train mode
    reference = ReferenceModel(model)
    reference.train()
    assert reference.frozen is not None and not any(p.requires_grad for p in reference.frozen.parameters())
    batch = _batch()
    before = reference.outputs(batch)
    torch.testing.assert_close(before.hidden, _base_hidden(tiny_model_path, batch), atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    after = reference.outputs(batch)
    torch.testing.assert_close(after.hidden, before.hidden)
    torch.testing.assert_close(after.head.weight, before.head.weight)
    assert not torch.equal(after.head.weight, model.get_output_embeddings().weight)


def test_method_rejects_parts_of_the_wrong_kind_naming_the_key() -> None:
    """Keys relative to the method's node (build_method puts the node's key, ``method``, in front)."""
    with pytest.raises(ConfigError, match=r"'terms\.oops'") as error:
        Method("x", terms={"oops": torch.nn.Identity()})  # type: ignore[dict-item]
    assert error.value.relative
    with pytest.raises(ConfigError, match=r"'transforms\.mix'"):
        Method("x", transforms={"mix": lambda examples, context: examples})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match=r"'posthoc'"):
        Method("x", posthoc=object())  # type: ignore[arg-type]


def test_method_applies_transforms_in_config_order() -> None:
    class Append(DataTransform):
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def __call__(self, examples: list, context: MethodContext) -> list:  # type: ignore[override]
            return [*examples, self.tag]

    method = Method("x", transforms={"first": Append("a"), "second": Append("b")})
    assert method.transform_data([], None) == ["a", "b"]  # type: ignore[arg-type]
    assert isinstance(Method("x").optimizer([torch.nn.Parameter(torch.zeros(1))], lr=0.1), torch.optim.AdamW)


EARLY_STOPPING = ["+callbacks.early_stopping._target_=lightning.pytorch.callbacks.EarlyStopping",
                  "+callbacks.early_stopping.monitor=train/nll", "+callbacks.early_stopping.check_on_train_epoch_end=true"]


def test_a_callback_and_a_logger_from_the_command_line_join_the_trainer(tiny_model_path: str, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """EarlyStopping added as a user types it, CSV logging from conf/lightning_loggers/: the Trainer gets both
    beside the default progress bar and the checkpoints resuming needs, and both run (one epoch of two steps)."""
    cfg = compose_config(["model=tiny_random", "train.batch_size=2", "trainer.max_steps=2", "trainer.log_every_n_steps=1",
                          *EARLY_STOPPING, "lightning_loggers=csv", f"paths.output_dir={tmp_path}"])
    validate_config(cfg, sweeping=False)
    trainers: list[L.Trainer] = []
    original = L.Trainer.fit

    def recording_fit(trainer: L.Trainer, *args: object, **kwargs: object) -> None:
        trainers.append(trainer)
        original(trainer, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(L.Trainer, "fit", recording_fit)
    examples = [TrainingExample(id=f"q{i}", messages=[{"role": "user", "content": f"What is {i} + {i}?"}],
                                plain_text=f"What is {i} + {i}?", target=str(2 * i)) for i in range(4)]
    fit(cfg, build_trainable_model(cfg, tiny_model_path), load_tokenizer(tiny_model_path), Method("sft"), examples,
        tmp_path / "job", run=None)

    (trainer,) = trainers
    assert trainer.global_step == 2
    (stopping,) = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert stopping.monitor == "train/nll" and torch.isfinite(stopping.best_score)  # it read the epoch's loss
    assert isinstance(trainer.progress_bar_callback, TQDMProgressBar)  # conf/callbacks/progress_bar.yaml
    assert any(isinstance(c, ModelCheckpoint) for c in trainer.callbacks)  # built in code: resume relies on it
    assert (tmp_path / "job" / "lightning" / "last.ckpt").exists()
    (logger,) = trainer.loggers
    assert isinstance(logger, CSVLogger)
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as handle:
        assert [row["step"] for row in csv.DictReader(handle) if row["train/nll"]] == ["0", "1"]


@pytest.mark.parametrize(("overrides", "key", "problem"), [
    (["+callbacks.stop.monitor=train/nll"], "callbacks.stop", "has no _target_"),
    (["+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStoping"], "callbacks.stop._target_",
     "not an importable class"),
    (["+callbacks.csv._target_=lightning.pytorch.loggers.CSVLogger"], "callbacks.csv._target_", "is not a"),
    (["+lightning_loggers.stop._target_=lightning.pytorch.callbacks.EarlyStopping"], "lightning_loggers.stop._target_",
     "is not a"),
    (["+callbacks.rich._target_=lightning.pytorch.callbacks.RichProgressBar"], "callbacks", "2 progress bars"),
    (["+trainer.enable_progress_bar=false"], "trainer.enable_progress_bar", "callbacks.progress_bar adds"),
])
def test_a_callback_or_logger_that_cannot_work_fails_before_any_work(overrides: list[str], key: str,
                                                                     problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(compose_config(overrides), sweeping=False)
    assert info.value.key == key and problem in str(info.value)


@pytest.mark.parametrize("overrides", [["callbacks=[default,early_stopping]"], ["callbacks=[default,rich_progress_bar]"],
                                       ["callbacks=none", "+trainer.enable_progress_bar=false"],
                                       ["callbacks.progress_bar=null", "+trainer.enable_progress_bar=false"],
                                       ["lightning_loggers=csv"], EARLY_STOPPING])
def test_the_ready_callback_and_logger_files_are_valid(overrides: list[str]) -> None:
    validate_config(compose_config(overrides), sweeping=False)
