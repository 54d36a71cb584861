"""Loss terms against values worked out by hand, plus gradient and masking checks.

The losses take final hidden states and an LM head. With the identity head (weight = I) the hidden
rows ARE the logits, so the hand-worked values are written as logits.
"""

from __future__ import annotations

import math

import pytest
import torch

from ragforget.data.encoding import IGNORE_INDEX as IGN
from ragforget.errors import ConfigError
from ragforget.methods.base import Method, StepTensors
from ragforget.methods.losses import answer_nll, answer_positions, masked_kl, prompt_positions
from ragforget.methods.output_kl import OutputKL
from ragforget.methods.selfaug import InputKL
from ragforget.models.head import FinalHidden, LinearHead

LN = math.log


def as_logits(logits: torch.Tensor) -> FinalHidden:
    """[B, T, V] logits as hidden states under the identity head."""
    return FinalHidden(logits, LinearHead(torch.eye(logits.shape[-1], dtype=logits.dtype)))


def test_answer_nll_by_hand() -> None:
    # Position 0 predicts label[1] = 1 from uniform logits: -ln(1/3).
    # Position 1 predicts label[2] = 2 from logits [0, 0, ln 2]: p = 2/4, so -ln(1/2).
    logits = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, LN(2)], [5.0, -5.0, 1.0]]])
    labels = torch.tensor([[IGN, 1, 2]])
    assert answer_nll(as_logits(logits), labels).item() == pytest.approx((LN(3) + LN(2)) / 2, abs=1e-6)


def test_answer_nll_ignores_unlabelled_positions() -> None:
    logits = torch.randn(2, 4, 5)
    labels = torch.full((2, 4), IGN)
    assert answer_nll(as_logits(logits), labels).item() == 0.0


# One position where p = [1/2, 1/2] (policy) and p0 = [3/4, 1/4] (reference).
POLICY_ROW = [0.0, 0.0]
REFERENCE_ROW = [LN(3), 0.0]
FORWARD_KL = 0.75 * LN(0.75 / 0.5) + 0.25 * LN(0.25 / 0.5)   # KL(p0 || p) = 0.1308...
REVERSE_KL = 0.5 * LN(0.5 / 0.75) + 0.5 * LN(0.5 / 0.25)      # KL(p || p0) = 0.1438...


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Batch of 1 x 3 positions: [differs, identical, padding with a huge difference]."""
    policy = torch.tensor([[POLICY_ROW, [1.0, 2.0], [0.0, 0.0]]])
    reference = torch.tensor([[REFERENCE_ROW, [1.0, 2.0], [50.0, -50.0]]])
    return policy, reference


@pytest.mark.parametrize(("direction", "expected"), [("forward", FORWARD_KL), ("reverse", REVERSE_KL)])
def test_masked_kl_by_hand_mean_over_positions(direction: str, expected: float) -> None:
    policy, reference = _pair()
    mask = torch.tensor([[True, True, False]])
    value = masked_kl(as_logits(policy), as_logits(reference), mask, direction=direction)  # type: ignore[arg-type]
    assert value.item() == pytest.approx(expected / 2, abs=1e-6)  # 2 selected positions, one has KL 0


def test_masked_kl_zero_for_identical_distributions() -> None:
    logits = torch.randn(2, 5, 7)
    everywhere = torch.ones(2, 5, dtype=torch.bool)
    assert masked_kl(as_logits(logits), as_logits(logits.clone()), everywhere).item() == pytest.approx(0, abs=1e-6)


def test_masked_kl_nothing_selected_is_zero_with_graph() -> None:
    policy = torch.randn(1, 3, 4, requires_grad=True)
    value = masked_kl(as_logits(policy), as_logits(torch.randn(1, 3, 4)), torch.zeros(1, 3, dtype=torch.bool))
    value.backward()
    assert value.item() == 0.0 and policy.grad is not None


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_chunked_kl_gradient_matches_autograd(direction: str) -> None:
    torch.manual_seed(0)
    policy = torch.randn(2, 5, 11, dtype=torch.float64, requires_grad=True)
    reference = torch.randn(2, 5, 11, dtype=torch.float64)
    mask = torch.rand(2, 5) > 0.3

    value = masked_kl(as_logits(policy), as_logits(reference), mask, direction=direction, chunk_rows=2)  # type: ignore[arg-type]
    (grad,) = torch.autograd.grad(value, policy)

    p_log = torch.log_softmax(policy[mask], -1)
    r_log = torch.log_softmax(reference[mask], -1)
    if direction == "forward":
        naive = (r_log.exp() * (r_log - p_log)).sum(-1).mean()
    else:
        naive = (p_log.exp() * (p_log - r_log)).sum(-1).mean()
    (naive_grad,) = torch.autograd.grad(naive, policy)
    assert value.item() == pytest.approx(naive.item(), abs=1e-10)
    torch.testing.assert_close(grad, naive_grad, atol=1e-10, rtol=1e-8)


def test_chunk_rows_do_not_change_the_value() -> None:
    torch.manual_seed(1)
    policy, reference = torch.randn(3, 7, 13), torch.randn(3, 7, 13)
    mask = torch.ones(3, 7, dtype=torch.bool)
    one = masked_kl(as_logits(policy), as_logits(reference), mask, chunk_rows=1)
    many = masked_kl(as_logits(policy), as_logits(reference), mask, chunk_rows=1000)
    assert one.item() == pytest.approx(many.item(), rel=1e-6)


def test_masked_kl_rejects_unknown_direction() -> None:
    with pytest.raises(ValueError, match="direction"):
        masked_kl(as_logits(torch.zeros(1, 1, 2)), as_logits(torch.zeros(1, 1, 2)), torch.ones(1, 1, dtype=torch.bool),
                  direction="sideways")  # type: ignore[arg-type]


def test_prompt_positions_exclude_answers_and_padding() -> None:
    labels = torch.tensor([[IGN, IGN, 7, 2, IGN]])
    attention = torch.tensor([[1, 1, 1, 1, 0]])   # last position is padding (pad id == eos id)
    assert prompt_positions(labels, attention).tolist() == [[True, True, False, False, False]]
    assert answer_positions(labels).tolist() == [[False, True, True, False, False]]


def test_input_kl_term_weights_the_prompt_kl() -> None:
    policy, reference = _pair()
    labels = torch.tensor([[IGN, IGN, IGN]])
    attention = torch.tensor([[1, 1, 0]])
    batch = {"input_ids": torch.zeros(1, 3, dtype=torch.long), "attention_mask": attention, "labels": labels}
    step = StepTensors(batch=batch, policy=as_logits(policy), reference=as_logits(reference), model=torch.nn.Identity())
    assert InputKL(weight=0.5, direction="forward")(step).item() == pytest.approx(0.5 * FORWARD_KL / 2, abs=1e-6)
    assert InputKL(weight=0.5, direction="reverse")(step).item() == pytest.approx(0.5 * REVERSE_KL / 2, abs=1e-6)


def test_output_kl_reads_answer_positions_where_input_kl_reads_the_prompt() -> None:
    # labels [IGN, 1, 1]: position 0 predicts an answer token, position 1 too, position 2 is last.
    # Output KL averages positions 0 and 1: (FORWARD_KL + 0) / 2.
    # Input KL averages the prompt position 0 only: FORWARD_KL.
    policy, reference = _pair()
    batch = {"input_ids": torch.zeros(1, 3, dtype=torch.long), "attention_mask": torch.ones(1, 3, dtype=torch.long),
             "labels": torch.tensor([[IGN, 1, 1]])}
    step = StepTensors(batch=batch, policy=as_logits(policy), reference=as_logits(reference), model=torch.nn.Identity())
    assert OutputKL(weight=2.0, direction="forward")(step).item() == pytest.approx(2.0 * FORWARD_KL / 2, abs=1e-6)
    assert OutputKL(weight=1.0, direction="reverse")(step).item() == pytest.approx(REVERSE_KL / 2, abs=1e-6)
    assert InputKL(weight=1.0, direction="forward")(step).item() == pytest.approx(FORWARD_KL, abs=1e-6)
    assert OutputKL(weight=1.0, direction="forward").needs_reference


def test_negative_weight_is_rejected_naming_its_parameter() -> None:
    """The term names its own parameter; the config node's key goes in front where it is built (test_configs)."""
    with pytest.raises(ConfigError) as error:
        InputKL(weight=-1.0, direction="forward")
    assert error.value.key == "weight" and error.value.relative


def test_unknown_direction_is_rejected_naming_its_parameter() -> None:
    with pytest.raises(ConfigError) as error:
        OutputKL(weight=1.0, direction="sideways")  # type: ignore[arg-type]
    assert error.value.key == "direction" and error.value.relative and "'sideways'" in str(error.value)


def test_method_requires_reference_only_for_kl_terms() -> None:
    assert not Method("sft").needs_reference
    assert Method("selfaug", terms={"selfaug": InputKL(weight=0.5, direction="forward")}).needs_reference
