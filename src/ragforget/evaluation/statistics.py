"""Paired statistics of a fine-tuned model against its base: per-item deltas, intervals, detectable effects.

Base and fine-tuned models answer the same items, so the change of a score is a paired quantity: its
uncertainty comes from how the per-item differences vary, which is far smaller than the two scores'
own standard errors when the models agree on most items. Every score here is a ratio of sums over
items (``sum(numerators) / sum(denominators)``, then a monotone ``transform``): accuracy is a mean
(denominators 1), bits per byte is log-likelihood over bytes, instruction-level accuracy is
instructions followed over instructions given. Pure functions (the bootstrap is seeded), and the
file that keeps an evaluation's scores item by item.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragforget.utils.io import read_json, write_json

# (1.959964 + 0.841621): a two-sided 5% test detects an effect this many standard errors away 80% of the time.
Z_ALPHA = 1.959963984540054   # standard normal quantile at 1 - 0.05 / 2
Z_POWER = 0.8416212335729143  # standard normal quantile at 0.80


# How a score is formed from its ratio of sums: a mean or a ratio as it is, or exp (a probability per byte
# from log-likelihood per byte: the retention suite's wiki_ppl score is 2 ** -bits_per_byte).
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"identity": lambda ratio: ratio, "exp": np.exp}


@dataclass(frozen=True)
class ItemScores:
    """One model's per-item score parts on one measure, in item order:
    ``score = TRANSFORMS[transform](sum(num) / sum(den))``."""

    ids: tuple[str, ...]
    num: tuple[float, ...]
    den: tuple[float, ...]
    transform: str = "identity"

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.num) == len(self.den)):
            raise ValueError("ItemScores needs one numerator and one denominator per item id")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.transform!r}; one of {sorted(TRANSFORMS)}")

    def score(self) -> float:
        return float(TRANSFORMS[self.transform](np.sum(self.num) / np.sum(self.den)))

    def to_json(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "num": list(self.num), "den": list(self.den), "transform": self.transform}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ItemScores:
        return cls(tuple(data["ids"]), tuple(data["num"]), tuple(data["den"]), data.get("transform", "identity"))


ITEM_SCORES = "item_scores.json"  # an evaluation's measures item by item, beside its predictions


def write_item_scores(folder: Path, items: Mapping[str, ItemScores]) -> None:
    write_json(folder / ITEM_SCORES, {name: scores.to_json() for name, scores in items.items()})


def read_item_scores(folder: Path) -> dict[str, ItemScores]:
    """What :func:`write_item_scores` wrote to ``folder``."""
    return {name: ItemScores.from_json(data) for name, data in read_json(folder / ITEM_SCORES).items()}


@dataclass(frozen=True)
class PairedDelta:
    """tuned - base on the same items: the estimate, its bootstrap interval, standard error and MDE."""

    delta: float
    lo: float
    hi: float
    se: float
    mde: float
    n: int


def minimum_detectable_effect(standard_error: float, z_alpha: float = Z_ALPHA, z_power: float = Z_POWER) -> float:
    """The smallest true change a two-sided test at 5% finds with 80% power: (z_alpha + z_power) x SE."""
    return (z_alpha + z_power) * standard_error


def _resampled_deltas(base: ItemScores, tuned: ItemScores, resamples: int,
                      rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """The delta tuned - base on all items, and on ``resamples`` resamples of the items (paired)."""
    if set(base.ids) != set(tuned.ids) or len(base.ids) != len(tuned.ids):
        raise ValueError(f"the models scored different items ({len(set(base.ids) ^ set(tuned.ids))} differ)")
    if not base.ids:
        raise ValueError("no items to compare")
    order = {item: i for i, item in enumerate(tuned.ids)}
    index = np.array([order[item] for item in base.ids])
    parts = np.stack([np.asarray(base.num, float), np.asarray(base.den, float),
                      np.asarray(tuned.num, float)[index], np.asarray(tuned.den, float)[index]])

    def delta(sums: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (TRANSFORMS[tuned.transform](sums[..., 2] / sums[..., 3])
                    - TRANSFORMS[base.transform](sums[..., 0] / sums[..., 1]))

    draws = rng.integers(0, parts.shape[1], size=(resamples, parts.shape[1]))
    return float(delta(parts.sum(axis=1))), delta(parts[:, draws].sum(axis=2).T)


def _percentile_interval(resampled: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` share of the resampled values: the bootstrap percentile interval."""
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(resampled, [tail, 1.0 - tail], method="inverted_cdf")
    return float(lo), float(hi)


def _summary(estimate: float, resampled: np.ndarray, n: int, level: float) -> PairedDelta:
    lo, hi = _percentile_interval(resampled, level)
    se = float(np.std(resampled, ddof=1))
    return PairedDelta(estimate, lo, hi, se, minimum_detectable_effect(se), n)


def paired_bootstrap(base: ItemScores, tuned: ItemScores, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> PairedDelta:
    """Resample items (the same ones for both models) for the interval of score(tuned) - score(base).

    Items are matched by id; both models must have scored the same items. The interval is the
    percentile interval of the resampled deltas at ``level``; ``se`` is their standard deviation.
    """
    estimate, resampled = _resampled_deltas(base, tuned, resamples, np.random.default_rng(seed))
    return _summary(estimate, resampled, len(base.ids), level)


def paired_macro_bootstrap(base: Mapping[str, ItemScores], tuned: Mapping[str, ItemScores], resamples: int = 2000,
                           seed: int = 0, level: float = 0.95) -> PairedDelta:
    """The delta of the mean over tasks (a macro average), each task's items resampled on their own."""
    if not base or set(base) != set(tuned):
        raise ValueError(f"the macro average needs the same tasks on both sides: {sorted(base)} vs {sorted(tuned)}")
    rng = np.random.default_rng(seed)
    per_task = [_resampled_deltas(base[task], tuned[task], resamples, rng) for task in sorted(base)]
    estimate = float(np.mean([e for e, _ in per_task]))
    resampled = np.mean([r for _, r in per_task], axis=0)
    return _summary(estimate, resampled, sum(len(base[t].ids) for t in base), level)


def pearson_interval(xs: Sequence[float], ys: Sequence[float], groups: Sequence[str] | None = None,
                     resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Pearson r of the points and its bootstrap percentile interval.

    The points are resampled as pairs, or, with ``groups`` (e.g. the run each point of a curve came
    from), whole groups at a time: points of one run are not independent. NaN (all three) with fewer
    than 3 points or a variable that does not vary; resamples without variation are left out.
    """
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if x.size < 3 or x.size != y.size or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    if groups is None:
        draws = [rng.integers(0, x.size, size=x.size) for _ in range(resamples)]
    else:
        members = [np.flatnonzero(np.asarray(groups) == g) for g in dict.fromkeys(groups)]
        draws = [np.concatenate([members[i] for i in rng.integers(0, len(members), size=len(members))])
                 for _ in range(resamples)]
    rs = np.array([_pearson(x[d], y[d]) for d in draws])
    return (_pearson(x, y), *_percentile_interval(rs[np.isfinite(rs)], level))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((dx ** 2).sum() * (dy ** 2).sum()))
    return float((dx * dy).sum() / denominator) if denominator > 0 else math.nan
