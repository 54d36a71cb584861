"""The training loop on the tiny model: the reference pass, method parts."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config
from ragforget.errors import ConfigError
from ragforget.methods.base import DataTransform, Method, MethodContext, StepTensors
from ragforget.methods.selfaug import InputKL
from ragforget.models.head import final_hidden
from ragforget.models.loading import attach_lora, load_model
from ragforget.training.reference import ReferenceModel


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
    assert InputKL(weight=0.5)(step).item() > 1e-6
    with model.disable_adapter():
        step = StepTensors(batch=batch, policy=final_hidden(model, batch), reference=reference, model=model)
        assert InputKL(weight=0.5)(step).item() == pytest.approx(0.0, abs=1e-7)


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
    with pytest.raises(ConfigError, match=r"method\.impl\.terms\.oops"):
        Method("x", terms={"oops": torch.nn.Identity()})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match=r"method\.impl\.transforms\.mix"):
        Method("x", transforms={"mix": lambda examples, context: examples})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match=r"method\.impl\.posthoc"):
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
