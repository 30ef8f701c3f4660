"""Popularity: items ranked by how many distinct users interacted with them, over all time or a recent window.

The simplest strong baseline of every top-N study, the cold-start fallback of ALS, and a candidate source.
Ties go to the smaller item index, so lists are deterministic.
"""

from __future__ import annotations

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
    """Cross join ``users`` with the top ``n + max seen`` items of ``counts`` (small), drop seen ones, keep ``n``."""
    seen = seen.select(F.col(USER_IDX).cast("int").alias(USER_IDX), F.col(ITEM_IDX).cast("int").alias(ITEM_IDX))
    agg_row = seen.join(users, USER_IDX).groupBy(USER_IDX).count().agg(F.max("count")).first()
    assert agg_row is not None  # a global aggregate returns exactly one row
    max_seen = agg_row[0] or 0
    popular = rank_popularity(counts, n + int(max_seen)).select(ITEM_IDX, SCORE, F.col(RANK).alias("_pr"))
    w = Window.partitionBy(USER_IDX).orderBy("_pr")
    return (
        users.crossJoin(F.broadcast(popular))
        .join(seen, [USER_IDX, ITEM_IDX], "left_anti")
        .withColumn(RANK, F.row_number().over(w))
        .where(F.col(RANK) <= n)
        .select(*(F.col(f.name).cast(f.dataType) for f in RECS_SCHEMA.fields))
    )


def rank_popularity(counts: DataFrame, n: int) -> DataFrame:
    """The top ``n`` rows of ``(item_idx, score)`` by score, ties by item_idx, with ``rank`` 1..n."""
    w = Window.orderBy(F.col(SCORE).desc(), F.col(ITEM_IDX).asc())
    return counts.withColumn(RANK, F.row_number().over(w)).where(F.col(RANK) <= n)
