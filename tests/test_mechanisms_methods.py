"""Method mechanisms pinned to exact values, so a plausible alteration fails a test: the positions each
KL reads, each wise_ft variant's exact interpolation weight, and the number of coordinates MoFO moves.

Expected values come from an independent computation (a plain model with hand-interpolated weights,
closed-form two-class KLs), never from the code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import compose_config

from ragforget.data.encoding import IGNORE_INDEX as IGN
from ragforget.methods.base import MethodContext, StepTensors, Variant
from ragforget.methods.mofo import MoFO
from ragforget.methods.output_kl import OutputKL
from ragforget.methods.selfaug import InputKL
from ragforget.methods.wise_ft import WEIGHT_PARAM, WiseFT
from ragforget.models.head import FinalHidden, LinearHead
from ragforget.models.loading import attach_lora, load_model

# ------------------------------------------------------------------------------------- KL positions

# Row 0: a 3-token prompt, a 2-token answer, one padding position. Row 1: 2 prompt tokens, 4 answer tokens.
LABELS = torch.tensor([[IGN, IGN, IGN, 7, 8, IGN],
                       [IGN, IGN, 5, 6, 7, 8]])
ATTENTION = torch.tensor([[1, 1, 1, 1, 1, 0],
                          [1, 1, 1, 1, 1, 1]])
# By hand: prompt positions = unlabelled and attended; answer positions = those whose NEXT label is set.
PROMPT = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
ANSWER = [(0, 2), (0, 3), (1, 1), (1, 2), (1, 3), (1, 4)]


def _two_class_kl(c: float) -> float:
    """KL(p0 || p) with p0 = softmax([c, 0]) and p = [1/2, 1/2], in closed form."""
    p = 1 / (1 + math.exp(-c))
    return p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))


def _kl_step() -> tuple[StepTensors, dict[tuple[int, int], float]]:
    """Every position has its own KL (c = 0.1 * (1 + 6 b + t)), so any other set of positions changes the mean."""
    policy = torch.zeros(2, 6, 2, dtype=torch.float64)
    reference = torch.zeros(2, 6, 2, dtype=torch.float64)
    kls = {}
    for b in range(2):
        for t in range(6):
            c = 0.1 * (1 + 6 * b + t)
            reference[b, t, 0] = c
            kls[(b, t)] = _two_class_kl(c)
    eye = LinearHead(torch.eye(2, dtype=torch.float64))  # identity head: the hidden rows are the logits
    batch = {"input_ids": torch.zeros(2, 6, dtype=torch.long), "attention_mask": ATTENTION, "labels": LABELS}
    return StepTensors(batch=batch, policy=FinalHidden(policy, eye), reference=FinalHidden(reference, eye),
                       model=torch.nn.Identity()), kls


def test_input_kl_reads_exactly_the_real_prompt_positions() -> None:
    step, kls = _kl_step()
    expected = sum(kls[pos] for pos in PROMPT) / len(PROMPT)
    assert InputKL(weight=1.0, direction="forward")(step).item() == pytest.approx(expected, abs=1e-12)


def test_output_kl_reads_exactly_the_positions_that_predict_answer_tokens() -> None:
    step, kls = _kl_step()
    expected = sum(kls[pos] for pos in ANSWER) / len(ANSWER)
    assert OutputKL(weight=1.0, direction="forward")(step).item() == pytest.approx(expected, abs=1e-12)


# ------------------------------------------------------------------------------------------ wise_ft

INPUT_IDS = torch.tensor([[11, 250, 37, 900, 4, 61, 702, 15], [8, 19, 433, 2, 77, 310, 5, 999]])


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT_IDS).logits


def _context(model_path: str, tmp_path: Path) -> MethodContext:
    return MethodContext(model_path=model_path, tokenizer=None, chat_template=True, dtype="float32",
                         cache_dir=tmp_path, seed=0)


def _variant(weight: float) -> Variant:
    return Variant(name=f"w{weight}", params={WEIGHT_PARAM: weight})


@pytest.mark.parametrize("weight", [0.25, 0.5])
def test_lora_variant_is_the_base_plus_w_times_the_adapter_delta(weight: float, tiny_model_path: str,
                                                                  tmp_path: Path) -> None:
    from peft.tuners.lora import LoraLayer

    model = attach_lora(load_model(tiny_model_path), compose_config(["model=tiny_random"]).model.lora)
    torch.manual_seed(0)
    with torch.no_grad():  # fresh LoRA has B = 0: make every adapter change the model
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    # Independently: a plain copy of the base whose adapted weights are W + w * s * B @ A, merged by hand.
    expected_model = load_model(tiny_model_path)
    with torch.no_grad():
        for name, layer in model.named_modules():
            if isinstance(layer, LoraLayer):
                delta = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
                target = expected_model.get_submodule(name.removeprefix("base_model.model."))
                target.weight += weight * delta
    expected = _logits(expected_model)

    with WiseFT([weight]).applied(model, _variant(weight), _context(tiny_model_path, tmp_path)):
        got = _logits(model)
    assert not torch.allclose(expected, _logits(model), atol=1e-3)  # w differs visibly from the trained model
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("weight", [0.25, 0.5])
def test_full_finetuning_variant_is_theta0_plus_w_times_the_change(weight: float, tiny_model_path: str,
                                                                    tmp_path: Path) -> None:
    base = load_model(tiny_model_path)
    trained = load_model(tiny_model_path)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    expected_model = load_model(tiny_model_path)
    with torch.no_grad():
        base_params = dict(base.named_parameters())
        for (name, p), t in zip(expected_model.named_parameters(), trained.parameters()):
            p.copy_(base_params[name] + weight * (t - base_params[name]))
    expected = _logits(expected_model)

    with WiseFT([weight]).applied(trained, _variant(weight), _context(tiny_model_path, tmp_path)):
        got = _logits(trained)
    assert not torch.allclose(expected, _logits(trained), atol=1e-3)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------- MoFO


def test_mofo_moves_ceil_of_fraction_times_size_coordinates_per_tensor() -> None:
    # fraction 0.25: ceil(0.25 * 10) = 3 of the 10-vector (floor would be 2), ceil(0.25 * 6) = 2 of the 2x3 matrix.
    vector = torch.nn.Parameter(torch.zeros(10))
    matrix = torch.nn.Parameter(torch.zeros(2, 3))
    optimizer = MoFO([vector, matrix], lr=0.1, fraction=0.25)
    vector.grad = torch.tensor([0.1, -0.9, 0.2, 0.8, -0.3, 0.4, 0.7, 0.5, -0.6, 0.05])
    matrix.grad = torch.tensor([[1e-3, -4e-3, 2e-3], [3e-3, -1e-4, 5e-4]])  # far smaller: still its own top-k
    optimizer.step()
    # First Adam step: bias-corrected m / sqrt(v) = sign(g), so each chosen coordinate moves by -lr * sign(g).
    expected_vector = torch.zeros(10)
    expected_vector[[1, 3, 6]] = torch.tensor([0.1, -0.1, -0.1])
    expected_matrix = torch.zeros(2, 3)
    expected_matrix[0, 1], expected_matrix[1, 0] = 0.1, -0.1
    torch.testing.assert_close(vector.detach(), expected_vector, rtol=0, atol=1e-6)
    torch.testing.assert_close(matrix.detach(), expected_matrix, rtol=0, atol=1e-4)
