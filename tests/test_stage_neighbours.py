"""The neighbours stage function on three users: the one who agrees comes first, with original ids."""

from __future__ import annotations

from datetime import date

import pytest
from stagekit import index, stage_io

from reelrank import columns as C
from reelrank.stages import neighbours as stage

pytestmark = pytest.mark.spark
DAY = date(2030, 1, 3)


def test_the_user_who_agrees_is_the_nearest(spark, cfg):
    ratings = {0: [1, 2, 3, 4, 5], 1: [1, 2, 3, 4, 5], 2: [5, 4, 3, 2, 1]}  # u01 agrees with u00, u02 disagrees
    rows = [(u, i, f"u{u:02d}", f"i{i:02d}", float(r), 1_700_000_000 + i) for u, rs in ratings.items()
            for i, r in enumerate(rs)]
    inter = spark.createDataFrame(rows, "user_idx INT, item_idx INT, user_id STRING, item_id STRING, rating DOUBLE, "
                                        "ts LONG")
    result = stage.run(stage_io(spark, cfg, "neighbours", DAY), cfg, interactions=inter,
                       user_index=index(spark, "user", 3))
    assert set(result.outputs) == {"user_neighbours"} and result.detail.endswith("pearson user-user, exact")
    pdf = result.outputs["user_neighbours"].toPandas()
    assert result.rows == len(pdf) > 0
    assert (pdf.entity_id == "u" + pdf.entity_idx.map("{:02d}".format)).all()  # ids joined to the right indexes
    assert (pdf.neighbour_id == "u" + pdf.neighbour_idx.map("{:02d}".format)).all()
    mine = pdf[pdf.entity_id == "u00"].sort_values(C.RANK)
    assert mine.neighbour_id.iloc[0] == "u01" and mine.similarity.iloc[0] > 0
    assert (mine.similarity.iloc[0] > mine[mine.neighbour_id == "u02"].similarity).all()


def test_plays_without_ratings_still_find_neighbours(spark, cfg):
    """Every rating equal (plays): the stage says it used binary cosine and finds pairs, never 0 in silence."""
    plays = {0: [0, 1, 2, 3], 1: [0, 1, 2], 2: [3, 4]}
    rows = [(u, i, f"u{u:02d}", f"i{i:02d}", 1.0, 1_700_000_000 + i) for u, items in plays.items() for i in items]
    inter = spark.createDataFrame(rows, "user_idx INT, item_idx INT, user_id STRING, item_id STRING, rating DOUBLE, "
                                        "ts LONG")
    result = stage.run(stage_io(spark, cfg, "neighbours", DAY), cfg, interactions=inter,
                       user_index=index(spark, "user", 3))
    assert result.detail.endswith("cosine user-user, exact") and result.rows > 0
    pdf = result.outputs["user_neighbours"].toPandas()
    top = pdf[pdf.entity_id == "u00"].sort_values(C.RANK).iloc[0]
    assert top.neighbour_id == "u01" and top.similarity == pytest.approx(3 / (4 * 3) ** 0.5)
