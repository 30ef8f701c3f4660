"""Neighbourhood predictions and recommendations from Pearson lists (:mod:`reelrank.neighbours`).

Rating predictions as scikit-surprise's KNNWithMeans (:func:`predict`, the evaluate stage's RMSE), and the
item-based top-N of Deshpande & Karypis (2004) (:func:`recommend`, the item-neighbour candidate source).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reelrank import columns as C
from reelrank.config import NeighboursConfig
from reelrank.factorize import top_k_sorted
from reelrank.neighbours import (
    ENTITY,
    FALLBACK,
    NEIGHBOUR,
    SIMILARITY,
    SUPPORT,
    neighbour_lists,
    require_columns,
    roles,
    shrunk,
    similarities,
)


def predict(
    train: DataFrame,
    pairs: DataFrame,
    by: str,
    cfg: NeighboursConfig,
    mode: str = "topk",
    neighbours: DataFrame | None = None,
    rating_range: tuple[float, float] | None = None,
) -> DataFrame:
    """``pairs`` with ``prediction`` and ``fallback`` added, as scikit-surprise's KNNWithMeans predicts.

    r̂ = mean_x + Σ sim·(r − mean_nb) / Σ sim over the ``cfg.k`` most similar neighbours (ties by index) that
    rated the target, keeping only sim > 0; x is the user (``by="user"``) or the item. ``mode="exact"`` looks
    among all similarities (``neighbours``: a :func:`similarities` frame, computed when None); ``mode="topk"``
    only among each entity's stored list (``neighbours``: a :func:`top_k` frame, :func:`neighbour_lists` when
    None). ``fallback`` is true when fewer than ``max(cfg.min_k, 1)`` neighbours were usable (the entity mean is
    returned) or the user or item is not in ``train`` (the global mean, as surprise). Predictions are clipped
    to ``rating_range``, by default the range of the training ratings.
    """
    x_col, y_col = roles(by)
    require_columns(pairs, [C.USER_IDX, C.ITEM_IDX], "pairs")
    require_columns(train, [C.USER_IDX, C.ITEM_IDX, C.RATING], "train")
    if mode not in ("exact", "topk"):
        raise ValueError(f"mode must be 'exact' or 'topk', got {mode!r}")
    if neighbours is None:
        neighbours = similarities(train, by, cfg) if mode == "exact" else neighbour_lists(train, by, cfg)
    tr = train.select(C.USER_IDX, C.ITEM_IDX, F.col(C.RATING).cast("double").alias(C.RATING))
    if rating_range is None:
        row = tr.agg(F.min(C.RATING), F.max(C.RATING), F.avg(C.RATING)).first()
        assert row is not None  # a global aggregate returns exactly one row
        lo, hi, global_mean = float(row[0]), float(row[1]), float(row[2])
    else:
        lo, hi = rating_range
        row = tr.agg(F.avg(C.RATING)).first()
        assert row is not None  # a global aggregate returns exactly one row
        global_mean = float(row[0])

    x_means = tr.groupBy(x_col).agg(F.avg(C.RATING).alias("_mean_x"))
    y_known = tr.select(F.col(y_col)).distinct().withColumn("_y_known", F.lit(True))
    todo = pairs.select(C.USER_IDX, C.ITEM_IDX).distinct()
    # the neighbours' ratings of the target, centred on each neighbour's mean: train rows (nb, y, r - mean_nb)
    rated = tr.join(F.broadcast(x_means), x_col).select(
        F.col(x_col).alias("_nb"), F.col(y_col), (F.col(C.RATING) - F.col("_mean_x")).alias("_dev")
    )
    sims = neighbours.where(F.col(SIMILARITY) > 0).select(
        F.col(ENTITY).alias(x_col), F.col(NEIGHBOUR).alias("_nb"), F.col(SIMILARITY).alias("_sim")
    )
    # Exact mode broadcasts its full similarity table: it is the verification path, for data whose pair list fits
    # in memory. Top-k lists are broadcast when Spark finds them small enough.
    if mode == "exact":
        sims = F.broadcast(sims)
    cand = todo.join(rated, y_col).join(sims, [x_col, "_nb"])
    # the k largest similarities per target (ties: smaller neighbour index first, as surprise's rating order),
    # picked by sorting each group's small candidate list rather than a global sort of all candidates
    cands = F.collect_list(F.struct(-F.col("_sim"), F.col("_nb"), F.col("_sim"), F.col("_dev")))
    best = F.slice(F.sort_array(cands), 1, cfg.k)
    agg = (
        cand.groupBy(y_col, x_col)
        .agg(best.alias("_top"))
        .select(
            y_col,
            x_col,
            F.aggregate("_top", F.lit(0.0), lambda acc, t: acc + t["_sim"] * t["_dev"]).alias("_num"),
            F.aggregate("_top", F.lit(0.0), lambda acc, t: acc + t["_sim"]).alias("_den"),
            F.size("_top").alias("_k"),
        )
    )
    k_needed = max(cfg.min_k, 1)
    used = F.coalesce(F.col("_k"), F.lit(0)) >= k_needed
    known = F.col("_mean_x").isNotNull() & F.col("_y_known").isNotNull()
    est = F.when(~known, F.lit(global_mean)).when(used, F.col("_mean_x") + F.col("_num") / F.col("_den"))
    est = est.otherwise(F.col("_mean_x"))
    # per-entity tables are O(entities): broadcast, like the id indexes in reelrank.matrix
    preds = (
        todo.join(F.broadcast(x_means), x_col, "left")
        .join(F.broadcast(y_known), y_col, "left")
        .join(agg, [C.USER_IDX, C.ITEM_IDX], "left")
        .select(
            C.USER_IDX,
            C.ITEM_IDX,
            _clip(est, lo, hi).alias(C.PREDICTION),
            (~(known & used)).alias(FALLBACK),
        )
    )
    return pairs.join(preds, [C.USER_IDX, C.ITEM_IDX], "left")


def _clip(c: Column, lo: float, hi: float) -> Column:
    return F.least(F.greatest(c, F.lit(lo)), F.lit(hi))


def fallback_rate(predictions: DataFrame) -> float:
    """Share of predictions that fell back to a mean (the evaluate stage logs it next to the RMSE)."""
    row = predictions.agg(F.avg(F.col(FALLBACK).cast("double"))).first()
    assert row is not None  # a global aggregate returns exactly one row
    return float(row[0] or 0.0)


def recommend(train: DataFrame, item_neighbours: DataFrame, n: int, shrinkage: float = 0.0,
              block_users: int = 1024) -> DataFrame:
    """Top ``n`` unseen items per user from the item-item lists, as ``user_idx, item_idx, score, rank``.

    Score of candidate i for user u: Σ sim(j, i) · n_ji / (n_ji + shrinkage) over the items j that u rated and
    whose stored list holds i with sim > 0 (the item-based top-N of Deshpande & Karypis, 2004): it rewards items
    close to many of the user's items. Raw Pearson is ±1 on two co-ratings, so without shrinkage obscure items
    win (ml-100k stratified NDCG@10 0.004; 0.31 with shrinkage 100). Ties go to the smaller item_idx. Items the
    user already rated are removed.

    The lists (top-k per item) go to every task as one sparse matrix and each block of ``block_users`` users is one
    sparse product; joining every rating with its item's list and grouping by (user, item) shuffled ~k rows per
    rating (30 M at 1M ratings; issue 15).
    """
    require_columns(train, [C.USER_IDX, C.ITEM_IDX], "train")
    require_columns(item_neighbours, [ENTITY, NEIGHBOUR, SIMILARITY, SUPPORT], "item_neighbours")
    edges: pd.DataFrame = item_neighbours.where(F.col(SIMILARITY) > 0).select(
        F.col(ENTITY).cast("int"), F.col(NEIGHBOUR).cast("int"), shrunk(shrinkage).cast("double").alias("_sim")
    ).toPandas()
    size = int(max(edges[ENTITY].max(), edges[NEIGHBOUR].max())) + 1 if len(edges) else 0
    sims = sp.csr_matrix((edges["_sim"].to_numpy(), (edges[ENTITY].to_numpy(), edges[NEIGHBOUR].to_numpy())),
                         shape=(size, size))
    shared = train.sparkSession.sparkContext.broadcast(sims)
    histories = train.groupBy(F.col(C.USER_IDX).cast("int").alias(C.USER_IDX)).agg(
        F.collect_set(F.col(C.ITEM_IDX).cast("int")).alias("_seen"))

    def score(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        s = shared.value
        for pdf in batches:
            for start in range(0, len(pdf), block_users):
                part = pdf.iloc[start:start + block_users]
                yield top_reachable(part[C.USER_IDX].to_numpy(np.int32), list(part["_seen"]), s, n)

    return histories.mapInPandas(score, ITEM_RECS_SCHEMA)


ITEM_RECS_SCHEMA = T.StructType([
    T.StructField(C.USER_IDX, T.IntegerType(), False), T.StructField(C.ITEM_IDX, T.IntegerType(), False),
    T.StructField(C.SCORE, T.DoubleType(), False), T.StructField(C.RANK, T.IntegerType(), False)])
"""What :func:`recommend` returns (scores are sums of doubles)."""


def top_reachable(users: np.ndarray, seen: list[np.ndarray], sims: sp.csr_matrix, n: int) -> pd.DataFrame:
    """One block of :func:`recommend`: positive scores only (items no rated item's list reaches are not listed)."""
    size = sims.shape[0]
    rows = np.repeat(np.arange(len(users)), [len(x) for x in seen])
    cols = np.concatenate([np.asarray(x, np.int64) for x in seen]) if len(seen) else np.zeros(0, np.int64)
    inside = cols < size
    x = sp.csr_matrix((np.ones(int(inside.sum())), (rows[inside], cols[inside])), shape=(len(users), size))
    scores = (x @ sims).toarray()
    scores[rows[inside], cols[inside]] = 0.0
    k = min(n, size)
    if k == 0:
        return pd.DataFrame({C.USER_IDX: [], C.ITEM_IDX: [], C.SCORE: [], C.RANK: []})
    top, top_scores = top_k_sorted(scores, k)  # columns are item indexes: ties go to the smaller item
    keep = top_scores > 0
    ranks = np.tile(np.arange(1, k + 1, dtype=np.int32), (len(users), 1))
    return pd.DataFrame({C.USER_IDX: np.repeat(users, k)[keep.ravel()], C.ITEM_IDX: top.astype(np.int32)[keep],
                         C.SCORE: top_scores[keep], C.RANK: ranks[keep]})
