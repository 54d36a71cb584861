"""WiSE-FT on the tiny model: w=0 is the base, w=1 the trained model, exactly; weights always come back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import compose_config
from peft.tuners.lora import LoraLayer

from ragforget.errors import ConfigError
from ragforget.methods.base import MethodContext, Variant
from ragforget.methods.build import build_method
from ragforget.methods.wise_ft import WEIGHT_PARAM, WiseFT
from ragforget.models.loading import attach_lora, load_model

INPUT_IDS = torch.tensor([[11, 250, 37, 900, 4, 61, 702, 15], [8, 19, 433, 2, 77, 310, 5, 999]])


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT_IDS).logits


def _variant(weight: float) -> Variant:
    return Variant(name=f"w{weight}", params={WEIGHT_PARAM: weight}, identity=weight == 1.0)


def _context(model_path: str, tmp_path: Path) -> MethodContext:
    return MethodContext(model_path=model_path, tokenizer=None, chat_template=True, dtype="float32",
                         cache_dir=tmp_path, seed=0)


def _strictly_between(mid: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((mid > torch.minimum(a, b)) & (mid < torch.maximum(a, b))).any())


def _scalings(model: torch.nn.Module) -> list[dict[str, float]]:
    return [dict(m.scaling) for m in model.modules() if isinstance(m, LoraLayer)]


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _assert_same_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    for name, p in model.named_parameters():
        assert torch.equal(p, state[name]), name


def _check_interpolation(model: torch.nn.Module, base_logits: torch.Tensor, context: MethodContext) -> None:
    """Shared checks: exact ends, a strict middle, exact restore (also after an exception)."""
    wise = WiseFT([0.0, 0.5, 1.0])
    trained_logits, trained_state = _logits(model), _state(model)
    assert not torch.equal(trained_logits, base_logits)  # the fine-tuning must be visible at all
    with wise.applied(model, _variant(0.0), context):
        assert torch.equal(_logits(model), base_logits)
    with wise.applied(model, _variant(1.0), context):
        assert torch.equal(_logits(model), trained_logits)
    with wise.applied(model, _variant(0.5), context):
        assert _strictly_between(_logits(model), base_logits, trained_logits)
    _assert_same_state(model, trained_state)
    assert torch.equal(_logits(model), trained_logits)

    with pytest.raises(RuntimeError, match="evaluation failed"), wise.applied(model, _variant(0.25), context):
        raise RuntimeError("evaluation failed")
    _assert_same_state(model, trained_state)
    assert torch.equal(_logits(model), trained_logits)


def test_lora_scaling_interpolates_exactly(tiny_model_path: str, tmp_path: Path) -> None:
    model = attach_lora(load_model(tiny_model_path), compose_config(["model=tiny_random"]).model.lora)
    torch.manual_seed(0)
    with torch.no_grad():  # fresh LoRA has B = 0 (a no-op): make the adapter change the model
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.5)
    with model.disable_adapter():
        base_logits = _logits(model)
    scalings = _scalings(model)
    assert scalings and all(s == {"default": 2.0} for s in scalings)  # alpha / r = 8 / 4

    _check_interpolation(model, base_logits, _context(tiny_model_path, tmp_path))
    assert _scalings(model) == scalings


def test_full_finetuning_lerps_towards_the_loaded_base(tiny_model_path: str, tmp_path: Path) -> None:
    base_logits = _logits(load_model(tiny_model_path))
    model = load_model(tiny_model_path)  # a loaded copy: the files at model_path stay the base
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)

    _check_interpolation(model, base_logits, _context(tiny_model_path, tmp_path))


def test_variants_one_per_weight() -> None:
    variants = WiseFT([0.25, 0.5, 1.0]).variants()
    assert [v.name for v in variants] == ["w0.25", "w0.5", "w1.0"]
    assert [v.params for v in variants] == [{WEIGHT_PARAM: 0.25}, {WEIGHT_PARAM: 0.5}, {WEIGHT_PARAM: 1.0}]
    assert [v.identity for v in variants] == [False, False, True]


@pytest.mark.parametrize("weights", [[], [1.5], [-0.1], [0.5, True], "0.5", 0.5, [0.5, 0.5], [float("nan")]])
def test_bad_weights_name_the_key(weights: object) -> None:
    with pytest.raises(ConfigError) as err:
        WiseFT(weights)  # type: ignore[arg-type]
    assert err.value.key == "weights" and err.value.relative
    with pytest.raises(ConfigError) as err:  # built from the config: the key the user sets
        build_method(compose_config(["method=wise_ft", "method.posthoc.weights=[0.5,0.5]"]).method)
    assert err.value.key == "method.posthoc.weights" and "repeated" in str(err.value)


def test_config_builds_the_transform() -> None:
    method = build_method(compose_config(["method=wise_ft", "method.posthoc.weights=[0,0.5]"]).method)
    assert isinstance(method.posthoc, WiseFT)
    assert method.posthoc.weights == [0.0, 0.5] and method.trains and method.terms == {}
