"""Invar-RAG stage-1 parts: losses against hand-worked values, pooling under padding, variants."""

from __future__ import annotations

import math
import random

import pytest
import torch

from ragforget.invar.losses import alignment_kl, info_nce, invariance_kl
from ragforget.invar.pooling import pool
from ragforget.invar.variants import DropStopwords, ResizeWindow, ShuffleClauses


def test_info_nce_by_hand() -> None:
    # One query, candidates scored [1, 0, 0] with the positive first, tau 0.5:
    # -log(e^2 / (e^2 + 2)) = log(1 + 2 e^-2)
    scores = torch.tensor([[1.0, 0.0, 0.0]])
    assert info_nce(scores, torch.tensor([0]), 0.5).item() == pytest.approx(math.log(1 + 2 * math.exp(-2)))
    # The positive in another column, and a second query: the mean of both rows.
    scores = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    expected = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    assert info_nce(scores, torch.tensor([1, 0]), 1.0).item() == pytest.approx(expected)


def test_alignment_kl_by_hand_and_zero_for_identical_rankings() -> None:
    # teacher p = softmax([ln 3, 0]) = [3/4, 1/4]; student q = [1/2, 1/2]:
    # KL(p || q) = 3/4 ln(3/2) + 1/4 ln(1/2)
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    value = alignment_kl(teacher, student, tau=1.0, teacher_tau=1.0)
    assert value.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    value.backward()
    assert student.grad is not None and student.grad[0, 0] < 0  # pulled toward the teacher's favourite
    # Temperatures scale the scores before the softmax: teacher [2 ln 3, 0] at tau 2 is the same p.
    assert alignment_kl(2 * teacher, torch.zeros(1, 2), 1.0, 2.0).item() == pytest.approx(value.item())
    assert alignment_kl(teacher, teacher.clone(), 1.0, 1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_invariance_kl_by_hand_and_zero_when_variants_agree() -> None:
    scores = torch.tensor([[math.log(3.0), 0.0]])          # p = [3/4, 1/4]
    variants = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])  # [1/2, 1/2] and p itself
    expected = (0.75 * math.log(1.5) + 0.25 * math.log(0.5) + 0.0) / 2
    assert invariance_kl(scores, variants, tau=1.0).item() == pytest.approx(expected)
    same = scores.unsqueeze(0).repeat(3, 1, 1)
    assert invariance_kl(scores, same, tau=0.05).item() == pytest.approx(0.0, abs=1e-7)


def test_last_token_pooling_with_left_and_right_padding() -> None:
    hidden = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2) + 1
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    expected_right = torch.nn.functional.normalize(torch.stack([hidden[0, 1], hidden[1, 3]]), dim=-1)
    expected_left = torch.nn.functional.normalize(torch.stack([hidden[0, 3], hidden[1, 3]]), dim=-1)
    assert torch.allclose(pool(hidden, right, "last"), expected_right)
    assert torch.allclose(pool(hidden, left, "last"), expected_left)


def test_mean_pooling_ignores_padding_on_either_side() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])
    expected = torch.nn.functional.normalize(torch.tensor([[2.0, 2.0]]), dim=-1)
    assert torch.allclose(pool(hidden, torch.tensor([[1, 1, 0]]), "mean"), expected)
    shifted = torch.tensor([[[100.0, 100.0], [1.0, 0.0], [3.0, 4.0]]])
    assert torch.allclose(pool(shifted, torch.tensor([[0, 1, 1]]), "mean"), expected)
    assert torch.allclose(pool(hidden, torch.tensor([[1, 1, 1]]), "mean").norm(dim=-1), torch.ones(1))


def test_query_and_passage_variants() -> None:
    rng = random.Random(0)
    assert DropStopwords()("Who wrote the novel Dune?", "p", rng) == ("wrote novel Dune?", "p")
    assert DropStopwords()("the of", "p", rng) == ("the of", "p")  # nothing left: the query stays
    query, passage = ShuffleClauses()("In 1965, after years of work, who wrote Dune?", "p", rng)
    assert query != "In 1965, after years of work, who wrote Dune?" and passage == "p"
    assert sorted(query.rstrip("?").split(", ")) == sorted(["In 1965", "after years of work", "who wrote Dune"])
    assert ShuffleClauses()("who wrote Dune?", "p", rng) == ("who wrote Dune?", "p")
    words = [f"w{i}" for i in range(8)]
    _, window = ResizeWindow(0.5)("q", " ".join(words), rng)
    kept = window.split()
    assert len(kept) == 4 and " ".join(words).find(window) >= 0  # contiguous
    with pytest.raises(ValueError):
        ResizeWindow(0.0)
