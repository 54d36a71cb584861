"""Paired statistics against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from ragforget.evaluation.statistics import (
    ItemScores,
    minimum_detectable_effect,
    paired_bootstrap,
    paired_macro_bootstrap,
    pearson_interval,
)


def scores(values: list[float], den: list[float] | None = None, ids: list[str] | None = None,
           transform: str = "identity") -> ItemScores:
    ids = ids or [f"q{i}" for i in range(len(values))]
    return ItemScores(tuple(ids), tuple(values), tuple(den or [1.0] * len(values)), transform)


def test_mde_is_2_80_standard_errors() -> None:
    # z(0.975) = 1.959964, z(0.80) = 0.841621: an effect of 2.801585 SE is found 80% of the time.
    assert minimum_detectable_effect(0.01) == pytest.approx(0.02801585, abs=1e-8)


def test_two_items_bootstrap_by_hand() -> None:
    """Per-item differences (0, 1): a resample of 2 items has mean 0 (1/4), 0.5 (1/2) or 1 (1/4).

    The 2.5% and 97.5% quantiles are 0 and 1; the resampled means' SD is sqrt(1/8) = 0.35355.
    """
    result = paired_bootstrap(scores([1.0, 0.0]), scores([1.0, 1.0]), resamples=20000, seed=1)
    assert result.delta == 0.5 and result.n == 2
    assert (result.lo, result.hi) == (0.0, 1.0)
    assert result.se == pytest.approx(math.sqrt(1 / 8), rel=0.02)
    assert result.mde == pytest.approx(2.801585 * result.se)


def test_pairing_removes_what_both_models_share() -> None:
    """A model that gains exactly 0.1 on every item has a zero-width interval, however the items vary."""
    base = [0.1, 0.9, 0.3, 0.7, 0.5, 0.2]
    result = paired_bootstrap(scores(base), scores([v + 0.1 for v in base]), seed=0)
    assert result.delta == pytest.approx(0.1)
    assert result.lo == pytest.approx(0.1) and result.hi == pytest.approx(0.1) and result.se < 1e-12


def test_items_are_matched_by_id_not_position() -> None:
    base = scores([1.0, 0.0, 0.0], ids=["a", "b", "c"])
    tuned = scores([0.0, 0.0, 1.0], ids=["c", "b", "a"])  # the same answers, listed in another order
    result = paired_bootstrap(base, tuned)
    assert (result.delta, result.lo, result.hi) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="different items"):
        paired_bootstrap(base, scores([1.0, 0.0], ids=["a", "b"]))


def test_ratio_scores_resample_numerator_and_denominator_together() -> None:
    """Bits per byte style: score = exp(sum(loglik) / sum(bytes)); the delta is of the transformed ratios."""
    base = scores([-2.0, -4.0], den=[2.0, 2.0], transform="exp")   # exp(-6 / 4) = exp(-1.5)
    tuned = scores([-2.0, -2.0], den=[2.0, 2.0], transform="exp")  # exp(-4 / 4) = exp(-1)
    assert base.score() == pytest.approx(math.exp(-1.5))
    result = paired_bootstrap(base, tuned, resamples=4000, seed=0)
    assert result.delta == pytest.approx(math.exp(-1.0) - math.exp(-1.5))
    # resamples: item 1 twice (delta 0), item 2 twice (exp(-1) - exp(-2)), or one each (the estimate)
    assert result.lo == pytest.approx(0.0) and result.hi == pytest.approx(math.exp(-1) - math.exp(-2))


def test_macro_delta_averages_the_tasks_deltas() -> None:
    """Task a gains 1 on one of two items (delta 0.5, interval [0, 1]); task b gains 0.2 on every item.

    The macro delta is (0.5 + 0.2) / 2 = 0.35; its resamples are (0 or 0.5 or 1 + 0.2) / 2: [0.1, 0.6].
    """
    base = {"a": scores([0.0, 0.0]), "b": scores([0.1, 0.5, 0.3])}
    tuned = {"a": scores([1.0, 0.0]), "b": scores([0.3, 0.7, 0.5])}
    result = paired_macro_bootstrap(base, tuned, resamples=20000, seed=0)
    assert result.delta == pytest.approx(0.35) and result.n == 5
    assert (result.lo, result.hi) == (pytest.approx(0.1), pytest.approx(0.6))


def test_item_scores_survive_json() -> None:
    original = scores([-2.0, -4.0], den=[2.0, 3.0], transform="exp")
    assert ItemScores.from_json(original.to_json()) == original


def test_pearson_interval_by_hand() -> None:
    # x = (1, 2, 3), y = (1, 3, 2): r = sxy / sqrt(sxx syy) = 1 / sqrt(2 * 2) = 0.5
    r, lo, hi = pearson_interval([1, 2, 3], [1, 3, 2])
    assert r == pytest.approx(0.5) and -1.0 <= lo <= r <= hi <= 1.0
    # points on a line: every resample with two distinct points has r = 1
    assert pearson_interval([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) == pytest.approx((1.0, 1.0, 1.0))
    # no spread in one variable: no correlation to report
    assert all(math.isnan(v) for v in pearson_interval([1, 2, 3], [0.5, 0.5, 0.5]))


def test_pearson_interval_resamples_whole_groups() -> None:
    """Two runs of three points each, each run on its own line: resampling runs gives r = 1 (one run twice)
    or the pooled r; resampling points would also mix points into other values."""
    xs, ys = [1, 2, 3, 1, 2, 3], [1, 2, 3, 3, 4, 5]
    groups = ["a"] * 3 + ["b"] * 3
    r, lo, hi = pearson_interval(xs, ys, groups=groups, resamples=4000)
    pooled = pearson_interval(xs, ys)[0]
    assert r == pytest.approx(pooled) and hi == pytest.approx(1.0) and lo == pytest.approx(pooled)
