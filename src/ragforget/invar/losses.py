"""Stage-1 (retriever) losses of Invar-RAG on score matrices. Q queries, C candidate passages.

Scores are similarities (dot products of normalized embeddings); each loss turns a row of scores into
a distribution over the candidates with a softmax at temperature ``tau``. The paper's exact formulas
could not be verified (its official code is a stub); these are the forms the suite uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ragforget.utils.numerics import kl_rows, upcast


def info_nce(scores: torch.Tensor, positives: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean cross-entropy of each query's positive among its candidates.

    scores [Q, C]; positives [Q] holds the column of each query's gold passage. With in-batch
    negatives the candidates are every passage of the batch (golds and mined hard negatives).
    """
    return F.cross_entropy(upcast(scores) / tau, positives)


def alignment_kl(teacher_scores: torch.Tensor, scores: torch.Tensor, tau: float, teacher_tau: float) -> torch.Tensor:
    """Mean KL(teacher || LLM) between score distributions over the same candidates (teacher: MiniLM).

    The teacher's scores carry no gradient; only the LLM is pulled toward the small encoder's ranking.
    """
    return kl_rows(teacher_scores.detach() / teacher_tau, scores / tau).mean()


def invariance_kl(scores: torch.Tensor, variant_scores: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean KL(original || variant) between a query's score distribution and its variants'.

    scores [Q, C] for the original queries and passages; variant_scores [K, Q, C] for K variants
    (rewritten queries, resized passage windows) over the same candidates. Zero when every variant
    ranks the candidates exactly like the original. Both sides get gradients: the retriever is
    pushed toward scores that do not depend on what the variants change.
    """
    k, q, c = variant_scores.shape
    original = (scores / tau).unsqueeze(0).expand(k, q, c).reshape(k * q, c)
    return kl_rows(original, (variant_scores / tau).reshape(k * q, c)).mean()
