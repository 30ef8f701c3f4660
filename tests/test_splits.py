"""Splits: the official ml-100k folds, per-user stratified random, per-user leave-last-by-time, the global window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import dataset

from reelrank.splits import (
    SECONDS_PER_DAY,
    choose_window,
    global_time_split,
    holdout_split,
    leave_last_by_time,
    leave_random_out,
    read_ml100k_fold,
    read_stratified_split,
    stratified_split,
    time_window_split,
)

pytestmark = pytest.mark.spark

SCHEMA = "user_idx INT, item_idx INT, rating DOUBLE, ts LONG"


@pytest.fixture(scope="module")
def interactions(spark):
    rng = np.random.default_rng(11)
    rows, counts = [], {0: 1, 1: 2, 2: 3, 3: 10, 4: 25}
    for user, n in counts.items():
        for item in rng.choice(100, size=n, replace=False):
            rows.append((user, int(item), float(rng.integers(1, 6)), int(rng.integers(0, 50))))
    return spark.createDataFrame(pd.DataFrame(rows, columns=["user_idx", "item_idx", "rating", "ts"]), SCHEMA)


def test_leave_last_by_time_matches_pandas(interactions):
    train, test = leave_last_by_time(interactions, 2)
    pdf = interactions.toPandas()
    expect_test = []
    for _, g in pdf.groupby("user_idx"):
        if len(g) > 2:
            expect_test.append(g.sort_values(["ts", "item_idx"], ascending=False).head(2))
    expect_test = pd.concat(expect_test)
    key = ["user_idx", "item_idx"]
    got_test = test.toPandas().sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got_test, expect_test.sort_values(key).reset_index(drop=True), check_dtype=False)
    got_train = train.toPandas()
    assert len(got_train) + len(got_test) == len(pdf)
    assert got_train.merge(got_test, on=key).empty
    assert sorted(got_test.user_idx.unique()) == [2, 3, 4]  # users 0 and 1 have <= 2 interactions: all in train
    # Everything held out is at least as recent as everything the user keeps.
    last_train = got_train.groupby("user_idx").ts.max()
    first_test = got_test.groupby("user_idx").ts.min()
    assert (first_test >= last_train[first_test.index]).all()
    with pytest.raises(ValueError):
        leave_last_by_time(interactions, 0)


def test_leave_last_breaks_ties_in_time_by_input_order(spark):
    """Three interactions in the same second: the one on the latest file row is the most recent, whatever the
    item ids (the peers' protocol: ties by file order)."""
    rows = [(0, 9, 4.0, 100, "r.csv", 1), (0, 1, 4.0, 100, "r.csv", 3), (0, 5, 4.0, 100, "r.csv", 2),
            (0, 7, 4.0, 50, "r.csv", 4)]
    df = spark.createDataFrame(rows, SCHEMA + ", source_file STRING, source_row LONG")
    _, test = leave_last_by_time(df, 1)
    assert [r.item_idx for r in test.collect()] == [1]
    _, test2 = leave_last_by_time(df, 2)
    assert sorted(r.item_idx for r in test2.collect()) == [1, 5]


def test_leave_random_out_holds_out_n_per_user_whatever_the_partitioning(interactions, cfg):
    train, test = leave_random_out(interactions, 2)
    got = test.toPandas()
    assert got.groupby("user_idx").size().to_dict() == {2: 2, 3: 2, 4: 2}  # users with <= 2 keep everything
    assert train.count() + len(got) == interactions.count()
    assert train.join(test, ["user_idx", "item_idx"]).count() == 0
    again = leave_random_out(interactions.repartition(5).sortWithinPartitions("ts"), 2)[1].toPandas()
    key = ["user_idx", "item_idx"]
    assert sorted(map(tuple, got[key].to_numpy())) == sorted(map(tuple, again[key].to_numpy()))
    # random, not the latest: over the 25-interaction user, at least one of the two is not among the latest two
    latest = leave_last_by_time(interactions, 2)[1].toPandas()
    assert set(got.query("user_idx == 4").item_idx) != set(latest.query("user_idx == 4").item_idx)
    random = cfg.replace(evaluate={"holdout": "random", "holdout_per_user": 2}).evaluate
    assert sorted(map(tuple, holdout_split(interactions, random)[1].toPandas()[key].to_numpy())) == sorted(
        map(tuple, got[key].to_numpy()))


def test_global_time_split_keeps_warm_unseen_pairs(spark):
    rows = [(0, 0, 1.0, 1), (0, 1, 1.0, 2), (1, 1, 1.0, 3), (1, 2, 1.0, 4),  # before the cut
            (0, 2, 1.0, 8), (1, 0, 1.0, 9),  # warm user, warm item, new pair: test
            (2, 0, 1.0, 8),  # a user new after the cut
            (0, 3, 1.0, 9),  # an item new after the cut
            (0, 1, 1.0, 9)]  # a pair already in train
    df = spark.createDataFrame(rows, SCHEMA)
    train, test = global_time_split(df, 0.5)  # the cut falls at ts 8
    assert sorted((r.user_idx, r.item_idx) for r in train.collect()) == [(0, 0), (0, 1), (1, 1), (1, 2)]
    assert sorted((r.user_idx, r.item_idx) for r in test.collect()) == [(0, 2), (1, 0)]
    with pytest.raises(ValueError):
        global_time_split(df, 1.0)


def test_stratified_split_per_user_ratio(interactions):
    train, test = stratified_split(interactions, 0.75, seed=42)
    tr, te = train.toPandas(), test.toPandas()
    sizes = interactions.toPandas().groupby("user_idx").size()
    n_train = tr.groupby("user_idx").size().reindex(sizes.index, fill_value=0)
    np.testing.assert_array_equal(n_train.to_numpy(), np.floor(sizes.to_numpy() * 0.75 + 1e-9).clip(min=1))
    assert len(tr) + len(te) == sizes.sum() and tr.merge(te, on=["user_idx", "item_idx"]).empty
    again = stratified_split(interactions, 0.75, seed=42)[1].toPandas()
    assert sorted(map(tuple, again[["user_idx", "item_idx"]].to_numpy())) == sorted(
        map(tuple, te[["user_idx", "item_idx"]].to_numpy())
    )


def test_ml100k_folds(spark):
    path = dataset("ml-100k")
    train, test = read_ml100k_fold(spark, path, "u1")
    assert train.columns == ["user_id", "item_id", "rating", "ts", "user_idx", "item_idx"]
    assert (train.count(), test.count()) == (80000, 20000)
    raw = pd.read_csv(path / "u1.test", sep="\t", names=["u", "i", "r", "t"])
    first = test.orderBy("user_idx", "item_idx").first()
    assert (first.user_idx, first.item_idx, first.rating, first.ts) == tuple(raw.sort_values(["u", "i"]).iloc[0])
    with pytest.raises(FileNotFoundError):
        read_ml100k_fold(spark, path, "u9")


def test_stratified_files(spark):
    train, test = read_stratified_split(spark, dataset("ml-100k-stratified"))
    n_train, n_test = train.count(), test.count()
    assert n_train + n_test == 100000 and 0.74 < n_train / 1e5 < 0.76
    assert test.where("user_idx IS NULL OR ts IS NULL").count() == 0


DAY = SECONDS_PER_DAY
END = 1_700_000_000


def _day_rows(spark, rows):
    """(user, item, days before END) rows at noon of their day."""
    return spark.createDataFrame([(u, i, 1.0, int(END - d * DAY)) for u, i, d in rows], SCHEMA)


def test_the_window_is_the_last_days_widened_to_enough_active_users(spark):
    # users 0-2 active long ago and again at day 1, 5 and 20 before the end; user 3 only in the window
    rows = [(u, u, 100) for u in range(3)] + [(0, 10, 1), (1, 11, 5), (2, 12, 20), (3, 13, 2)]
    df = _day_rows(spark, rows)
    assert (choose_window(df, 7, 1, 0.9).days, choose_window(df, 7, 1, 0.9).users) == (7, 2)  # users 0 and 1
    # user 2 is back 20 days before END, 19 before the last interaction: the window widens to 19 days
    wide = choose_window(df, 7, 3, 0.9)
    assert (wide.days, wide.users, wide.cut) == (19, 3, END - 20 * DAY)
    assert "widened from 7" in wide.describe()
    # it never holds more than the share of interactions: at 0.5 it stops before day 20's (the 4th of 7)
    capped = choose_window(df, 7, 3, 0.5)
    assert capped.days == 18 and capped.users == 2
    # data spanning less than the window: the last share of the interactions
    short = choose_window(_day_rows(spark, [(0, 0, 0.5), (0, 1, 0.4), (1, 0, 0.3), (0, 2, 0.2)]), 7, 1, 0.5)
    assert short.days < 0.5 and short.users == 1


def test_the_window_holdout_keeps_warm_users_new_pairs_on_known_items(spark):
    rows = [(0, 0, 30), (0, 1, 29), (1, 1, 28), (1, 2, 27),  # history
            (0, 2, 3), (1, 0, 2),  # warm user, known item, new pair: held out
            (2, 0, 3),  # a user new in the window
            (0, 3, 2),  # an item new in the window
            (0, 1, 1)]  # a pair already in the history (a repeat)
    df = _day_rows(spark, rows)
    window = choose_window(df, 7, 1, 0.9)
    history, holdout = time_window_split(df, window)
    assert sorted((r.user_idx, r.item_idx) for r in history.collect()) == [(0, 0), (0, 1), (1, 1), (1, 2)]
    assert sorted((r.user_idx, r.item_idx) for r in holdout.collect()) == [(0, 2), (1, 0)]


def test_holdout_split_follows_the_evaluate_section(spark, cfg):
    df = _day_rows(spark, [(0, 0, 30), (0, 1, 2), (1, 1, 30), (1, 0, 1)])
    window = {"holdout": "window", "holdout_days": 7, "holdout_min_users": 1, "holdout_max_share": 0.9}
    history, holdout = holdout_split(df, cfg.replace(evaluate=window).evaluate)
    assert sorted((r.user_idx, r.item_idx) for r in holdout.collect()) == [(0, 1), (1, 0)]
    latest = holdout_split(df, cfg.replace(evaluate={"holdout": "latest", "holdout_per_user": 1}).evaluate)[1]
    assert latest.count() == 2
