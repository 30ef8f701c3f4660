"""Per-user ranking metrics in numpy: the one implementation behind every validator (the rankers' and sequence
models' early stopping), the evaluate stage's local references and the benches
(:func:`reelrank.evaluate.ranking_metrics` is the Spark engine's).

Definitions (the protocol of ``ml-100k-stratified/README.md``), for a user's ranked list against a relevant set:
precision@k = hits in the top k / k; recall@k = hits / #relevant; NDCG@k with binary gains and the ideal DCG over
``min(k, #relevant)`` relevant items at the top; MAP@k = the sum of precision at each hit / ``min(k, #relevant)``;
hit rate@k = 1 when the top k holds a hit. A user with no list scores 0; a user with nothing relevant is left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reelrank.columns import ITEM_IDX, RANK, USER_IDX


def discounts(k: int) -> np.ndarray:
    """The DCG discount of each of the first ``k`` positions: ``1 / log2(position + 2)``, positions from 0."""
    return 1.0 / np.log2(np.arange(2, k + 2))


def ideal_dcg(n_relevant: np.ndarray, k: int) -> np.ndarray:
    """The best DCG@k a user with ``n_relevant`` relevant items can reach (binary gains); 0 without any."""
    n = np.minimum(np.asarray(n_relevant, dtype=np.int64), k)
    cumulative = np.r_[0.0, np.cumsum(discounts(k))]
    return cumulative[n]


@dataclass(frozen=True)
class RankedHits:
    """Which of each user's top ``depth`` positions hold a relevant item, and how many items each finds relevant;
    every metric of this module at any ``k <= depth`` is computed from it."""

    users: np.ndarray
    """The users that have at least one relevant item, ascending."""
    hits: np.ndarray
    """``[users, depth]`` bool: position ``p`` (0-based) of the user's list holds a relevant item."""
    n_relevant: np.ndarray
    """``[users]`` how many distinct relevant items each user has (>= 1)."""

    def top(self, k: int) -> np.ndarray:
        """``hits`` of the first ``k`` positions (``k`` at most ``depth``)."""
        if k < 1 or k > self.hits.shape[1]:
            raise ValueError(f"k must be in 1..{self.hits.shape[1]} (the depth these hits were built for), got {k}")
        return self.hits[:, :k]


def ranked_hits(recs: pd.DataFrame, truth: pd.DataFrame, depth: int, user_col: str = USER_IDX,
                item_col: str = ITEM_IDX, rank_col: str = RANK) -> RankedHits:
    """:class:`RankedHits` of ``recs`` (one row per listed (user, item), 1-based ``rank_col``) against ``truth``
    (relevant (user, item) pairs; duplicates count once), for the users of ``truth``; ranks past ``depth`` are
    ignored."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    rel = truth[[user_col, item_col]].drop_duplicates()
    users, n_relevant = np.unique(rel[user_col].to_numpy(), return_counts=True)
    top = recs.loc[recs[rank_col] <= depth, [user_col, item_col, rank_col]]
    found = top.merge(rel, on=[user_col, item_col])
    hits = np.zeros((len(users), depth), dtype=bool)
    hits[np.searchsorted(users, found[user_col].to_numpy()), found[rank_col].to_numpy(np.int64) - 1] = True
    return RankedHits(users, hits, n_relevant)


def precision(h: RankedHits, k: int) -> np.ndarray:
    """Per user: hits in the top ``k`` / ``k``."""
    return h.top(k).sum(1) / k


def recall(h: RankedHits, k: int) -> np.ndarray:
    """Per user: hits in the top ``k`` / the user's relevant items."""
    return h.top(k).sum(1) / h.n_relevant


def ndcg(h: RankedHits, k: int) -> np.ndarray:
    """Per user: DCG@k (binary gains) / the ideal DCG over ``min(k, #relevant)`` relevant items."""
    return _row_sums(h.top(k) * discounts(k)) / ideal_dcg(h.n_relevant, k)


def average_precision(h: RankedHits, k: int) -> np.ndarray:
    """Per user: the sum of precision at each hit in the top ``k`` / ``min(k, #relevant)`` (MAP@k's terms)."""
    top = h.top(k)
    at_hit = np.where(top, np.cumsum(top, axis=1) / np.arange(1, k + 1), 0.0)
    return _row_sums(at_hit) / np.minimum(h.n_relevant, k)


def _row_sums(values: np.ndarray) -> np.ndarray:
    """Each row's sum added from its first position on (``sum(1)`` adds pairwise and can round differently)."""
    return np.cumsum(values, axis=1)[:, -1]


def hit(h: RankedHits, k: int) -> np.ndarray:
    """Per user: 1.0 when the top ``k`` holds a relevant item, else 0.0 (hit rate@k's terms)."""
    return h.top(k).any(1).astype(np.float64)


PER_USER: dict[str, Callable[[RankedHits, int], np.ndarray]] = {
    "precision": precision, "recall": recall, "ndcg": ndcg, "map": average_precision, "hit_rate": hit}
"""Each of :data:`reelrank.metric_keys.RANKING_METRICS` (as in ``metric@k`` keys) -> its per-user values."""


def mean(values: np.ndarray) -> float:
    """The mean of per-user values, NaN when there are none."""
    return float(np.mean(values)) if len(values) else math.nan


def mean_metrics(h: RankedHits, ks: list[int]) -> dict[str, float]:
    """Every metric of :data:`PER_USER` at each of ``ks`` averaged over the users, keys like ``"ndcg@10"``; 0.0
    when no user has a relevant item (as the Spark engine)."""
    return {f"{name}@{k}": float(np.mean(f(h, k))) if len(h.users) else 0.0
            for k in ks for name, f in PER_USER.items()}


def ndcg_of_scores(users: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k of each user's labelled rows ranked by ``scores`` (gains are the labels, ties broken by row order),
    for the users with a positive label, ascending: the rankers' validation."""
    users = np.asarray(users)
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if users.size == 0:
        return np.zeros(0)
    order = np.lexsort((np.arange(users.size), -scores, users))
    u, g = users[order], labels[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    pos: np.ndarray = np.arange(u.size) - np.repeat(starts, np.diff(np.r_[starts, u.size]))
    discount = np.where(pos < k, 1.0 / np.log2(pos + 2.0), 0.0)
    dcg = np.add.reduceat(g * discount, starts)
    ideal = labels[np.lexsort((-labels, users))]  # same user blocks, best labels first
    idcg = np.add.reduceat(ideal * discount, starts)
    has = idcg > 0
    return dcg[has] / idcg[has]


def ndcg_of_target_ranks(ranks: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k of each user whose one relevant item has 0-based ``ranks`` (items scored strictly above it): the
    sequence models' next-item validation."""
    ranks = np.asarray(ranks)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
