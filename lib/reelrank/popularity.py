"""Popularity: items ranked by how many distinct users interacted with them, over all time or a recent window.

The simplest strong baseline of every top-N study, the cold-start fallback of ALS, and a candidate source.
Ties go to the smaller item index, so lists are deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reelrank.columns import ITEM_IDX, RANK, SCORE, TS, USER_IDX

SECONDS_PER_DAY = 86400

RECS_SCHEMA = T.StructType(
    [
        T.StructField(USER_IDX, T.IntegerType(), False),
        T.StructField(ITEM_IDX, T.IntegerType(), False),
        T.StructField(SCORE, T.FloatType(), False),
        T.StructField(RANK, T.IntegerType(), False),
    ]
)
"""Every candidate list: ``(user_idx, item_idx, score, rank)`` with ranks 1..n per user."""


def item_users(ratings: DataFrame, window_days: float = 0.0) -> DataFrame:
    """``(item_idx, score)``: distinct users of each item, as a double; with ``window_days`` > 0 only over the
    interactions of the last ``window_days`` before the latest timestamp in ``ratings``."""
    if window_days > 0:
        agg_row = ratings.agg(F.max(TS)).first()
        assert agg_row is not None  # a global aggregate returns exactly one row
        latest = agg_row[0]
        if latest is not None:
            ratings = ratings.where(F.col(TS) >= F.lit(latest - window_days * SECONDS_PER_DAY))
    return ratings.groupBy(ITEM_IDX).agg(F.countDistinct(USER_IDX).cast("double").alias(SCORE))


def popular_items(ratings: DataFrame, n: int) -> DataFrame:
    """The ``n`` items rated by most distinct users: ``(item_idx, score, rank)``, ties broken by item_idx."""
    return rank_popularity(item_users(ratings), n)


def recommend_popular(ratings: DataFrame, users: DataFrame, seen: DataFrame, n: int) -> DataFrame:
    """The popularity baseline: each user's ``n`` most popular unseen items, ``(user_idx, item_idx, score, rank)``."""
    return popular_unseen(item_users(ratings), users.select(USER_IDX).distinct(), seen, n)


def popular_unseen(counts: DataFrame, users: DataFrame, seen: DataFrame, n: int) -> DataFrame:
    """Each user's first ``n`` items of the popularity ranking of ``counts`` that they have not seen.

    The ranking (one row per item) goes to every task and each user's list is a walk down it past the user's seen
    items, gathered by one group-by; a cross join of users with the top ``n +`` heaviest history items grew with
    users × that history (24 M rows on the 1M synthetic night, 300 M at 10M; issue 15).
    """
    ranked: pd.DataFrame = (counts.select(F.col(ITEM_IDX).cast("int"), F.col(SCORE).cast("float"))
              .orderBy(F.col(SCORE).desc(), F.col(ITEM_IDX).asc()).toPandas())
    ranking = users.sparkSession.sparkContext.broadcast(
        (ranked[ITEM_IDX].to_numpy(np.int32), ranked[SCORE].to_numpy(np.float32)))
    users = users.select(F.col(USER_IDX).cast("int").alias(USER_IDX)).distinct()
    seen = seen.select(F.col(USER_IDX).cast("int").alias(USER_IDX), F.col(ITEM_IDX).cast("int").alias(ITEM_IDX))
    histories = (seen.join(users, USER_IDX, "left_semi").groupBy(USER_IDX)
                 .agg(F.collect_list(ITEM_IDX).alias("_seen")))
    per_user = users.join(histories, USER_IDX, "left")

    def walk(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        items, scores = ranking.value
        for pdf in batches:
            rows: list[np.ndarray] = [np.zeros(0, np.int64)]
            owners: list[np.ndarray] = [np.zeros(0, np.int32)]
            for user, history in zip(pdf[USER_IDX].to_numpy(np.int32), pdf["_seen"], strict=True):
                known = np.asarray(history if history is not None else [], np.int32)
                head = np.arange(min(len(items), n + len(known)))
                rows.append(head[~np.isin(items[head], known)][:n])
                owners.append(np.full(len(rows[-1]), user, np.int32))
            pos = np.concatenate(rows)
            sizes = np.array([len(r) for r in rows[1:]], np.int64)
            rank = np.arange(len(pos)) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1
            yield pd.DataFrame({USER_IDX: np.concatenate(owners), ITEM_IDX: items[pos], SCORE: scores[pos],
                                RANK: rank.astype(np.int32)})

    return per_user.mapInPandas(walk, RECS_SCHEMA)


def rank_popularity(counts: DataFrame, n: int) -> DataFrame:
    """The top ``n`` rows of ``(item_idx, score)`` by score, ties by item_idx, with ``rank`` 1..n."""
    w = Window.orderBy(F.col(SCORE).desc(), F.col(ITEM_IDX).asc())
    return counts.withColumn(RANK, F.row_number().over(w)).where(F.col(RANK) <= n)
