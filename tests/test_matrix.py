"""Stable indexes, indexed interactions, statistics and the leave-last-by-time split."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reelrank import columns as C
from reelrank import matrix

pytestmark = pytest.mark.spark

ACCEPTED = T.StructType(
    [
        T.StructField(C.USER, T.StringType()),
        T.StructField(C.ITEM, T.StringType()),
        T.StructField(C.RATING, T.DoubleType()),
        T.StructField(C.TS, T.LongType()),
    ]
)


def _index(df):
    return {r[0]: r[1] for r in df.collect()}


def test_new_index_is_dense_and_sorted(spark):
    ids = spark.createDataFrame([("b",), ("a",), ("c",), ("a",)], [C.USER])
    idx = _index(matrix.extend_index(ids, None, C.USER, C.USER_IDX))
    assert idx == {"a": 0, "b": 1, "c": 2}


def test_existing_indexes_never_change_and_new_ids_follow(spark):
    first = matrix.extend_index(spark.createDataFrame([("m",), ("z",)], [C.USER]), None, C.USER, C.USER_IDX)
    before = _index(first)
    # second run: 'm' is gone from the input, 'a' (sorting before the old ids) and 'q' are new
    second = matrix.extend_index(spark.createDataFrame([("z",), ("a",), ("q",)], [C.USER]), first, C.USER, C.USER_IDX)
    after = _index(second)
    assert {k: after[k] for k in before} == before
    assert after["a"] == 2 and after["q"] == 3
    assert sorted(after.values()) == list(range(4))


def test_index_interactions_and_stats(spark):
    acc = spark.createDataFrame(
        [("u1", "i1", 4.0, 10), ("u1", "i2", 2.0, 20), ("u2", "i1", 5.0, 30)], ACCEPTED
    )
    users = matrix.extend_index(acc, None, C.USER, C.USER_IDX)
    items = matrix.extend_index(acc, None, C.ITEM, C.ITEM_IDX)
    inter = matrix.index_interactions(acc, users, items)
    assert inter.count() == 3
    assert set(inter.columns) == {C.USER, C.ITEM, C.RATING, C.TS, C.USER_IDX, C.ITEM_IDX}
    stats = {r[C.USER]: r for r in matrix.entity_stats(inter, C.USER, C.USER_IDX).collect()}
    assert stats["u1"]["n_ratings"] == 2
    assert stats["u1"]["mean_rating"] == pytest.approx(3.0)
    assert stats["u1"]["std_rating"] == pytest.approx(np.std([4.0, 2.0]))
    assert stats["u2"]["std_rating"] == 0.0
    assert (stats["u1"]["first_ts"], stats["u1"]["last_ts"]) == (10, 20)
    traced = acc.withColumn(C.SOURCE_FILE, F.lit("r.csv")).withColumn(C.SOURCE_ROW, F.monotonically_increasing_id())
    kept = matrix.index_interactions(traced, users, items)
    assert {C.SOURCE_FILE, C.SOURCE_ROW} <= set(kept.columns) and kept.count() == 3


def test_items_frame_without_metadata(spark):
    idx = spark.createDataFrame([("i1", 0)], [C.ITEM, C.ITEM_IDX])
    row = matrix.items_frame(None, idx).first()
    assert row[C.GENRES] == [] and row[C.TITLE] is None
