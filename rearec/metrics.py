"""Full-ranking metrics from target ranks, and the user / item subgroups of paper §4.3.1.

Every metric here is a function of the target's 1-based rank among all items, so keeping one rank per
(sample, representation) is enough to recompute any metric, subgroup or per-sample statistic later.
Ties are pessimistic: items scoring exactly as high as the target are ranked before it, so a model
that scores every item alike gets no credit.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import METRICS

CUTOFFS = (10, 20)


def target_ranks(scores: torch.Tensor, target_idx: torch.Tensor) -> torch.Tensor:
    """scores (B, N) or (B, S, N), target_idx (B,) 0-based -> 1-based ranks (B,) or (B, S), int64."""
    if scores.ndim == 2:
        return target_ranks(scores[:, None], target_idx)[:, 0]
    t = scores.gather(2, target_idx[:, None, None].expand(-1, scores.shape[1], 1))  # (B, S, 1)
    # rank = 1 + #(score > t) + #(score == t, other items)   (pessimistic ties)
    return (scores >= t).sum(2)


def per_sample(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-sample metric values (float64, same shape as ranks) for 'ndcg@k' or 'recall@k'."""
    name, _, k = metric.partition("@")
    k = int(k)
    ranks = np.asarray(ranks)
    hit = ranks <= k
    if name == "recall":
        return hit.astype(np.float64)
    if name == "ndcg":  # one relevant item: IDCG = 1
        return np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)
    raise ValueError(f"metric: unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def summarize(ranks: np.ndarray, metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
    """Mean of each metric over samples (interactions). ranks (N,)."""
    if len(ranks) == 0:
        return {m: float("nan") for m in metrics}
    return {m: float(per_sample(ranks, m).mean()) for m in metrics}


def user_groups(history_len: np.ndarray) -> np.ndarray:
    """UG0..UG3 by sequence length quartiles (UG0 = shortest). Boundaries are the 25/50/75 % quantiles
    of the evaluated samples' untruncated history lengths; equal lengths share a group."""
    if len(history_len) == 0:
        return np.zeros(0, dtype=np.int64)
    edges = np.quantile(history_len, [0.25, 0.5, 0.75])
    return np.searchsorted(edges, history_len, side="left").astype(np.int64)


def item_groups(target_popularity: np.ndarray) -> np.ndarray:
    """IG0..IG3 by the target's training popularity, four groups of equal sample counts
    (IG0 = least popular targets). Samples are ordered by popularity, ties by sample order (stable)."""
    n = len(target_popularity)
    order = np.argsort(target_popularity, kind="stable")
    groups = np.empty(n, dtype=np.int64)
    groups[order] = (np.arange(n) * 4) // max(n, 1)
    return groups
