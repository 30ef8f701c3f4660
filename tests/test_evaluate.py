"""Spark metrics against their local references and a peer library (torchmetrics) on ml-100k, plus hand-worked
examples and limits."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import dataset
from peer_metrics import KS, TOLERANCE, ml100k_peer

from reelrank.evaluate import (
    coverage,
    coverage_pandas,
    evaluate_top_n,
    metric_rows,
    metrics_frame,
    novelty,
    novelty_pandas,
    ranking_metrics,
    ranking_metrics_pandas,
    rating_metrics,
    rating_metrics_pandas,
)

pytestmark = pytest.mark.spark

RECS_SCHEMA = "user_idx INT, item_idx INT, rank INT"
TRUTH_SCHEMA = "user_idx INT, item_idx INT"


def _random_case(seed: int, n_users: int, n_items: int, list_len: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random ranked lists and random relevant sets (some users with no recs, some recs for users without truth)."""
    rng = np.random.default_rng(seed)
    recs, truth = [], []
    for u in range(n_users):
        if rng.random() > 0.1:
            length = int(rng.integers(0, list_len + 1))
            for r, i in enumerate(rng.choice(n_items, size=length, replace=False)):
                recs.append((u, int(i), r + 1))
        if rng.random() > 0.1:
            for i in rng.choice(n_items, size=int(rng.integers(1, min(15, n_items))), replace=False):
                truth.append((u, int(i)))
    return (
        pd.DataFrame(recs, columns=["user_idx", "item_idx", "rank"]).astype("int32"),
        pd.DataFrame(truth, columns=["user_idx", "item_idx"]).astype("int32"),
    )


@pytest.mark.parametrize(
    "seed,n_users,n_items,list_len,ks",
    [(0, 50, 30, 10, [1, 5, 10]), (1, 80, 100, 20, [3, 10, 25]), (2, 20, 12, 12, [12])],
)
def test_ranking_metrics_match_pandas(spark, seed, n_users, n_items, list_len, ks):
    recs, truth = _random_case(seed, n_users, n_items, list_len)
    got = ranking_metrics(spark.createDataFrame(recs, RECS_SCHEMA), spark.createDataFrame(truth, TRUTH_SCHEMA), ks)
    want = ranking_metrics_pandas(recs, truth, ks)
    assert set(got) == set(want) == {f"{m}@{k}" for k in ks for m in ("precision", "recall", "ndcg", "map", "hit_rate")}
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert 0 < want[f"ndcg@{ks[-1]}"] < 1


@pytest.mark.slow
def test_spark_ranking_metrics_match_torchmetrics_on_ml100k(spark):
    """The Spark engine against a peer library's implementation on real data (ml-100k's fold u1, popularity lists);
    the case, the definitions and the one difference (MAP's denominator, converted) are in ``peer_metrics``."""
    recs, truth, peer = ml100k_peer(dataset("ml-100k"))
    got = ranking_metrics(spark.createDataFrame(recs.astype("int32"), RECS_SCHEMA),
                          spark.createDataFrame(truth.astype("int32"), TRUTH_SCHEMA), KS)
    assert got.keys() == peer.keys()
    for key in peer:
        assert got[key] == pytest.approx(peer[key], abs=TOLERANCE), key
    assert 0.1 < got["ndcg@10"] < 0.5 and got["map@10"] < got["precision@10"]


@pytest.mark.parametrize("seed", [0, 1])
def test_rating_coverage_novelty_match_pandas(spark, seed):
    rng = np.random.default_rng(seed)
    pdf = pd.DataFrame({"rating": rng.integers(1, 6, 200).astype(float), "prediction": rng.uniform(1, 5, 200)})
    got = rating_metrics(spark.createDataFrame(pdf))
    want = rating_metrics_pandas(pdf)
    assert got == pytest.approx(want, abs=1e-12)

    recs, truth = _random_case(seed, 40, 60, 8)
    train = truth.copy()
    recs_df, train_df = spark.createDataFrame(recs, RECS_SCHEMA), spark.createDataFrame(train, TRUTH_SCHEMA)
    assert coverage(recs_df, train_df) == pytest.approx(coverage_pandas(recs, train), abs=1e-12)
    assert novelty(recs_df, train_df) == pytest.approx(novelty_pandas(recs, train), abs=1e-12)
    assert 0 < coverage_pandas(recs, train) < 1


def test_hand_worked_example(spark):
    # user 1: list [a, b, c, d], relevant {b, d, e}; user 2: list [x], relevant {x}.
    recs = spark.createDataFrame([(1, 10, 1), (1, 11, 2), (1, 12, 3), (1, 13, 4), (2, 20, 1)], RECS_SCHEMA)
    truth = spark.createDataFrame([(1, 11), (1, 13), (1, 14), (2, 20)], TRUTH_SCHEMA)
    got = ranking_metrics(recs, truth, [2, 4])
    # k=2: user 1 hits b at rank 2.
    assert got["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert got["recall@2"] == pytest.approx((1 / 3 + 1) / 2)
    ndcg1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert got["ndcg@2"] == pytest.approx((ndcg1 + 1) / 2)
    assert got["map@2"] == pytest.approx(((1 / 2) / 2 + 1) / 2)
    # k=4: user 1 hits at ranks 2 and 4, ideal over min(4, 3) = 3 positions.
    ndcg1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    assert got["ndcg@4"] == pytest.approx((ndcg1 + 1) / 2)
    assert got["map@4"] == pytest.approx(((1 / 2 + 2 / 4) / 3 + 1) / 2)
    assert got["precision@4"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert got["hit_rate@4"] == 1.0


def test_limits_perfect_empty_and_large_k(spark):
    truth = spark.createDataFrame([(1, 10), (1, 11), (2, 20)], TRUTH_SCHEMA)
    perfect = spark.createDataFrame([(1, 10, 1), (1, 11, 2), (2, 20, 1)], RECS_SCHEMA)
    got = ranking_metrics(perfect, truth, [1, 2, 50])
    for k in (1, 2, 50):
        assert got[f"ndcg@{k}"] == pytest.approx(1.0)
        assert got[f"map@{k}"] == pytest.approx(1.0)
        assert got[f"hit_rate@{k}"] == 1.0
    assert got["recall@50"] == pytest.approx(1.0)
    assert got["precision@50"] == pytest.approx((2 / 50 + 1 / 50) / 2)  # k beyond the relevant set
    assert got["recall@1"] == pytest.approx((1 / 2 + 1) / 2)

    empty = spark.createDataFrame([], RECS_SCHEMA)
    assert all(v == 0.0 for v in ranking_metrics(empty, truth, [5]).values())
    # A user with relevant items but no list counts as 0; extra users in recs do not count.
    partial = spark.createDataFrame([(1, 10, 1), (1, 11, 2), (9, 10, 1)], RECS_SCHEMA)
    assert ranking_metrics(partial, truth, [2])["ndcg@2"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        ranking_metrics(perfect, truth, [0])


def test_rating_metrics_rejects_nan(spark):
    df = spark.createDataFrame([(4.0, 3.5), (3.0, float("nan"))], "rating DOUBLE, prediction DOUBLE")
    with pytest.raises(ValueError, match="NaN"):
        rating_metrics(df)


def test_evaluate_top_n_and_metric_rows(spark):
    train = spark.createDataFrame([(1, 10), (1, 11), (2, 10), (3, 12)], TRUTH_SCHEMA)
    recs = spark.createDataFrame([(1, 12, 1), (2, 11, 1), (2, 12, 2)], RECS_SCHEMA)
    truth = spark.createDataFrame([(1, 12), (2, 13)], TRUTH_SCHEMA)
    got = evaluate_top_n(recs, truth, train, [1, 2])
    assert got["coverage@1"] == pytest.approx(2 / 3)  # items 12, 11 of {10, 11, 12}
    assert got["coverage@2"] == pytest.approx(2 / 3)
    # novelty@1: item 12 seen by 1 of 3 users, item 11 by 1 of 3.
    assert got["novelty@1"] == pytest.approx(-math.log2(1 / 3))
    assert got["precision@1"] == pytest.approx(0.5)
    rows = metric_rows("als", {"rmse": 0.9, "ndcg@10": 0.4}, users=7)
    assert rows == [("als", "ndcg", 10, 0.4, 7), ("als", "rmse", None, 0.9, 7)]
    assert metrics_frame(spark, rows).columns == ["model", "metric", "k", "value", "users"]
    assert metrics_frame(spark, rows).count() == 2
    with pytest.raises(ValueError):
        metric_rows("als", {"NDCG 10": 1.0})
