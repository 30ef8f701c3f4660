"""The matrix stage function on hand-built accepted rows: indexes extending the published ones, the holdout split."""

from __future__ import annotations

from datetime import date

import pytest
from stagekit import ITEMS, PER_USER, USERS, accepted, stage_io

from reelrank import columns as C
from reelrank.inputs.sources import ITEMS_SCHEMA
from reelrank.stages import matrix as stage

pytestmark = pytest.mark.spark
DAY = date(2030, 1, 2)


def test_indexes_extend_the_published_ones_and_each_user_holds_out_the_latest(spark, cfg):
    cfg = cfg.replace(evaluate={"holdout": "latest"})
    io = stage_io(spark, cfg, "matrix", DAY)
    published = spark.createDataFrame([("u03", 7, date(2029, 12, 31)), ("u99", 0, date(2029, 12, 31)),
                                       ("u05", 1, date(2029, 12, 30))], "user_id STRING, user_idx INT, run_date DATE")
    items = spark.createDataFrame([], ITEMS_SCHEMA)
    result = stage.run(io, cfg, accepted=accepted(spark), raw_items=items, published_user_index=published,
                       published_item_index=None)
    assert set(result.outputs) == set(stage.STAGE.outputs) and result.rows == USERS * PER_USER
    users = {r[C.USER]: r[C.USER_IDX] for r in result.outputs["user_index"].collect()}
    # the latest published night keeps its indexes (u05's older one is not it); new ids follow in sorted order
    assert users["u03"] == 7 and users["u99"] == 0
    assert [users[f"u{u:02d}"] for u in range(USERS) if u != 3] == list(range(8, 8 + USERS - 1))
    items_idx = {r[C.ITEM]: r[C.ITEM_IDX] for r in result.outputs["item_index"].collect()}
    assert items_idx == {f"i{i:02d}": i for i in range(ITEMS)}  # no published index: sorted ids from 0
    holdout = result.outputs["holdout"].toPandas()
    history = result.outputs["history"].toPandas()
    per_user = cfg.evaluate.holdout_per_user
    assert (holdout.groupby(C.USER_IDX).size() == per_user).all() and len(holdout) == USERS * per_user
    assert len(history) + len(holdout) == USERS * PER_USER
    latest_history = history.groupby(C.USER_IDX)[C.TS].max()
    assert (holdout.groupby(C.USER_IDX)[C.TS].min() > latest_history).all()  # the latest ones are held out
    assert len(users) == USERS + 1  # u99 stays in the index though it rated nothing tonight
    assert result.detail == f"{USERS + 1:,} users × {ITEMS:,} items, holdout {USERS * per_user:,}"


def test_the_window_holdout_is_one_cut_in_time(spark, cfg):
    """The hand-built ratings span minutes, less than the window's days: the window is the last quarter of them,
    one cut in time for everyone, and holds only users and items seen before it."""
    cfg = cfg.replace(evaluate={"holdout": "window"})
    io = stage_io(spark, cfg, "matrix", DAY)
    result = stage.run(io, cfg, accepted=accepted(spark), raw_items=spark.createDataFrame([], ITEMS_SCHEMA),
                       published_user_index=None, published_item_index=None)
    history, holdout = (result.outputs[k].toPandas() for k in ("history", "holdout"))
    assert len(holdout) > 0 and history[C.TS].max() < holdout[C.TS].min()  # one cut in time for everyone
    assert set(holdout[C.USER_IDX]) <= set(history[C.USER_IDX])
    assert set(holdout[C.ITEM_IDX]) <= set(history[C.ITEM_IDX])
