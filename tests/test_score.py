"""Top-N selection and the published shape of recommendations."""

from __future__ import annotations

import pytest

from reelrank import columns as C
from reelrank import score

pytestmark = pytest.mark.spark


def test_top_n_ranks_and_ties(spark):
    rows = [(0, 5, 0.9), (0, 3, 0.9), (0, 1, 0.1), (0, 2, 0.5), (1, 1, 0.2)]
    df = spark.createDataFrame(rows, [C.USER_IDX, C.ITEM_IDX, C.SCORE])
    got = sorted(tuple(r) for r in score.top_n(df, 2).collect())
    assert got == [(0, 3, 0.9, 1), (0, 5, 0.9, 2), (1, 1, 0.2, 1)]


def test_with_original_ids(spark):
    recs = spark.createDataFrame([(0, 1, 0.5, 1)], [C.USER_IDX, C.ITEM_IDX, C.SCORE, C.RANK])
    users = spark.createDataFrame([("alice", 0)], [C.USER, C.USER_IDX])
    items = spark.createDataFrame([("i-a", 0), ("i-b", 1)], [C.ITEM, C.ITEM_IDX])
    row = score.with_original_ids(recs, users, items, "mlp", "r1").first()
    assert row.asDict() == {C.USER: "alice", C.ITEM: "i-b", C.RANK: 1, C.SCORE: 0.5, C.MODEL: "mlp",
                            C.MODEL_VERSION: "r1"}
