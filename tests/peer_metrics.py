"""A real-data case for the ranking metrics and a peer library's values on it (torchmetrics' retrieval metrics).

The case: ml-100k's official fold u1; each user of ``u1.test`` with a rating >= 4 finds those items relevant, and
gets the :data:`LIST_LENGTH` items most rated in ``u1.base`` that the user did not rate there (ties to the smaller
item id), a list that differs per user. torchmetrics scores one user at a time over the listed items (score
``LIST_LENGTH + 1 - rank``) and the relevant items left off the list (score 0, which torchmetrics never counts as a
hit for precision, recall and AP).

Definitions compared with reelrank's (binary relevance, ideal DCG over ``min(k, #relevant)``):

* precision@k = hits / k, recall@k = hits / #relevant, hit rate@k: the same as reelrank's (every list is
  :data:`LIST_LENGTH` >= k long, so torchmetrics' ``adaptive_k`` question does not arise).
* NDCG@k: the same; torchmetrics averages the gains of tied scores, and the only tie (score 0) lies past every k.
* MAP@k differs: torchmetrics' AP@k divides the sum of precision at each hit by the hits in the top k, reelrank's
  (as Spark's ``RankingMetrics`` and the recommenders library) by ``min(k, #relevant)``; the peer value is
  converted per user as ``AP_torchmetrics * hits@k / min(k, #relevant)`` with ``hits@k = precision@k * k``.

torchmetrics computes in float32, so values agree to about 1e-6.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from reelrank.columns import ITEM_IDX, RANK, USER_IDX

LIST_LENGTH = 20
KS = [1, 5, 10, 20]
RELEVANT_RATING = 4
TOLERANCE = 1e-6
"""torchmetrics' float32 arithmetic against float64."""


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", names=[USER_IDX, ITEM_IDX, "rating", "ts"])


def ml100k_case(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(recs, truth)``: each relevant user's list (user_idx, item_idx, 1-based rank) and relevant pairs."""
    base, test = _read(folder / "u1.base"), _read(folder / "u1.test")
    truth = test.loc[test["rating"] >= RELEVANT_RATING, [USER_IDX, ITEM_IDX]].reset_index(drop=True)
    counts = base.groupby(ITEM_IDX).size()
    popular = counts.index.to_numpy()[np.lexsort((counts.index.to_numpy(), -counts.to_numpy()))]
    seen = base.groupby(USER_IDX)[ITEM_IDX].agg(set).to_dict()
    rows = []
    for user in np.unique(truth[USER_IDX]):
        items = [i for i in popular if i not in seen.get(user, set())][:LIST_LENGTH]
        rows += [(user, item, rank) for rank, item in enumerate(items, start=1)]
    return pd.DataFrame(rows, columns=[USER_IDX, ITEM_IDX, RANK]), truth


@cache
def ml100k_peer(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """:func:`ml100k_case` and :func:`torchmetrics_means` at :data:`KS` on it, computed once per test run."""
    recs, truth = ml100k_case(folder)
    return recs, truth, torchmetrics_means(recs, truth, KS)


def torchmetrics_means(recs: pd.DataFrame, truth: pd.DataFrame, ks: list[int]) -> dict[str, float]:
    """The mean over ``truth``'s users of torchmetrics' precision, recall, NDCG, AP (converted, see above) and hit
    rate at each k, keys as :func:`reelrank.evaluate.ranking_metrics`'."""
    from torchmetrics.functional.retrieval import (
        retrieval_average_precision,
        retrieval_hit_rate,
        retrieval_normalized_dcg,
        retrieval_precision,
        retrieval_recall,
    )

    lists = {u: g.sort_values(RANK) for u, g in recs.groupby(USER_IDX)}
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("precision", "recall", "ndcg", "map", "hit_rate")}
    users = truth.groupby(USER_IDX)[ITEM_IDX].agg(set)
    for user, relevant in users.items():
        listed = lists[user][ITEM_IDX].tolist()
        missed = sorted(relevant - set(listed))
        preds = torch.tensor([len(listed) + 1.0 - r for r in range(1, len(listed) + 1)] + [0.0] * len(missed))
        target = torch.tensor([i in relevant for i in listed] + [True] * len(missed))
        for k in ks:
            precision = float(retrieval_precision(preds, target, top_k=k))
            sums[f"precision@{k}"] += precision
            sums[f"recall@{k}"] += float(retrieval_recall(preds, target, top_k=k))
            sums[f"ndcg@{k}"] += float(retrieval_normalized_dcg(preds, target, top_k=k))
            ap = float(retrieval_average_precision(preds, target, top_k=k))
            sums[f"map@{k}"] += ap * round(precision * k) / min(k, len(relevant))
            sums[f"hit_rate@{k}"] += float(retrieval_hit_rate(preds, target, top_k=k))
    return {key: value / len(users) for key, value in sums.items()}
