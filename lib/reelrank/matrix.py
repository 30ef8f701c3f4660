"""Stable integer indexes for users and items, the indexed interaction matrix, and per-entity statistics."""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reelrank import columns as C

log = logging.getLogger(__name__)


def extend_index(ids: DataFrame, existing: DataFrame | None, id_col: str, idx_col: str) -> DataFrame:
    """Return the full id -> index map: existing entries unchanged, unseen ids numbered after the largest index.

    New ids are numbered in sorted id order so that the same input always yields the same indexes.
    """
    distinct = ids.select(id_col).distinct()
    if existing is None:
        new_ids, offset = distinct, 0
    else:
        new_ids = distinct.join(existing.select(id_col), id_col, "left_anti")
        agg_row = existing.agg(F.coalesce(F.max(idx_col) + 1, F.lit(0))).first()
        assert agg_row is not None  # a global aggregate returns exactly one row
        offset = agg_row[0]
    spark = ids.sparkSession
    numbered = new_ids.orderBy(id_col).rdd.zipWithIndex().map(lambda p: (p[0][0], int(p[1]) + offset))
    schema = T.StructType(
        [T.StructField(id_col, T.StringType(), False), T.StructField(idx_col, T.IntegerType(), False)]
    )
    added = spark.createDataFrame(numbered, schema)
    return added if existing is None else existing.select(id_col, idx_col).unionByName(added)


def index_interactions(accepted: DataFrame, user_index: DataFrame, item_index: DataFrame) -> DataFrame:
    """Accepted interactions with their user and item indexes attached, and where each came from (file, row:
    the order of interactions within the same second, for time-ordered holdouts and sequences) when it has it."""
    origin = C.origin_columns(accepted.columns)
    return (
        accepted.select(C.USER, C.ITEM, C.RATING, C.TS, *origin)
        .join(F.broadcast(user_index), C.USER)
        .join(F.broadcast(item_index), C.ITEM)
        .select(C.USER, C.ITEM, C.RATING, C.TS, C.USER_IDX, C.ITEM_IDX, *origin)
    )


def items_frame(raw_items: DataFrame | None, item_index: DataFrame) -> DataFrame:
    """Item metadata keyed by index; items without metadata get no title and no genres."""
    no_genres = F.array().cast("array<string>")
    if raw_items is None:
        return item_index.select(
            C.ITEM, C.ITEM_IDX, F.lit(None).cast("string").alias(C.TITLE), no_genres.alias(C.GENRES),
            F.lit(None).cast("int").alias(C.YEAR),
        )
    return item_index.join(raw_items, C.ITEM, "left").select(
        C.ITEM, C.ITEM_IDX, C.TITLE, F.coalesce(C.GENRES, no_genres).alias(C.GENRES), C.YEAR
    )


def entity_stats(interactions: DataFrame, id_col: str, idx_col: str) -> DataFrame:
    """Count, mean and (population) standard deviation of ratings, first and last timestamp per entity."""
    return interactions.groupBy(idx_col, id_col).agg(
        F.count(F.lit(1)).alias("n_ratings"),
        F.avg(C.RATING).alias("mean_rating"),
        F.coalesce(F.stddev_pop(C.RATING), F.lit(0.0)).alias("std_rating"),
        F.min(C.TS).alias("first_ts"),
        F.max(C.TS).alias("last_ts"),
    )
