"""The training loop on the tiny model: reference logits, adapter-only updates, resume."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config
from ragforget.errors import ConfigError
from ragforget.methods.base import DataTransform, Method, MethodContext, StepTensors
from ragforget.methods.selfaug import InputKL
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


def test_selfaug_kl_is_zero_while_adapters_are_zero(tiny_model_path: str) -> None:
    cfg = compose_config(["model=tiny_random"])
    model = attach_lora(load_model(tiny_model_path), {**cfg.model.lora, "dropout": 0.1})
    model.train()  # dropout on: the reference pass must switch it off by itself
    batch = _batch()
    reference = ReferenceModel(model)
    ref_logits = reference.logits(batch)
    assert model.training, "the reference pass must restore train mode"
    model.eval()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    step = StepTensors(batch=batch, logits=logits, reference_logits=ref_logits, model=model)
    assert InputKL(weight=0.5)(step).item() == 0.0  # LoRA B starts at zero: bit-exact base logits


def test_full_finetuning_reference_is_a_frozen_copy(tiny_model_path: str) -> None:
    model = load_model(tiny_model_path)
    reference = ReferenceModel(model)
    assert reference.frozen is not None and not any(p.requires_grad for p in reference.frozen.parameters())
    batch = _batch()
    before = reference.logits(batch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    torch.testing.assert_close(reference.logits(batch), before)


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
