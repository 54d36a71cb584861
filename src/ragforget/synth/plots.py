"""The score histogram self_synth logs beside its dataset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ragforget.synth.judging import SCORE_RANGE  # noqa: E402


def score_histogram(candidate_scores: Sequence[float], kept_scores: Sequence[float], threshold: float | None,
                    path: Path) -> Path:
    """Mean judge score of every scored candidate and of the kept best ones, with the threshold."""
    low, high = SCORE_RANGE
    bins = np.arange(low - 0.125, high + 0.25, 0.25).tolist()  # averages of integer scores fall on quarters and halves
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.hist(candidate_scores, bins=bins, alpha=0.5, label=f"all scored candidates ({len(candidate_scores)})")
    axes.hist(kept_scores, bins=bins, alpha=0.8, label=f"kept, best per instruction ({len(kept_scores)})")
    if threshold is not None:
        axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    axes.set_xlabel("mean committee score (1-5)")
    axes.set_ylabel("count")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
