"""Offline metrics in Spark, each with a local reference (``*_pandas``; the ranking ones are
:mod:`reelrank.ranking_metrics`'s numpy engine) that the tests compare against.

Rating metrics: RMSE, MAE. Ranking metrics at each k, averaged over the users of ``truth`` (a user with no
recommendations scores 0): precision@k (hits / k), recall@k (hits / #relevant), NDCG@k (binary relevance,
ideal DCG over ``min(k, #relevant)``), MAP@k (sum of precision at each hit / ``min(k, #relevant)``) and
hit rate@k. Beyond accuracy: catalogue coverage and novelty (mean self-information ``-log2`` of the share
of training users who interacted with a recommended item). This is the protocol of
``ml-100k-stratified/README.md``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reelrank import ranking_metrics as rm
from reelrank.columns import ITEM_IDX, PREDICTION, RANK, RATING, USER_IDX
from reelrank.metric_keys import parse_metric_key

log = logging.getLogger(__name__)

METRICS_SCHEMA = T.StructType(
    [
        T.StructField("model", T.StringType()),
        T.StructField("metric", T.StringType()),
        T.StructField("k", T.IntegerType()),
        T.StructField("value", T.DoubleType()),
        T.StructField("users", T.LongType()),
    ]
)
"""The ``metrics`` table (and :func:`metrics_frame`): ``users`` is how many users the mean is over (the quality
gate's standard error needs it); k is null for rating metrics."""


def rating_metrics(df: DataFrame, label_col: str = RATING, prediction_col: str = PREDICTION) -> dict[str, float]:
    """``{"rmse", "mae"}`` over every row; a null or NaN prediction is an error (it would hide cold starts)."""
    row = df.agg(
        F.sqrt(F.avg((F.col(prediction_col) - F.col(label_col)) ** 2)).alias("rmse"),
        F.avg(F.abs(F.col(prediction_col) - F.col(label_col))).alias("mae"),
        F.sum(F.when(F.col(prediction_col).isNull() | F.isnan(prediction_col), 1).otherwise(0)).alias("bad"),
        F.count(F.lit(1)).alias("n"),
    ).first()
    assert row is not None  # a global aggregate returns exactly one row
    if row["n"] == 0:
        raise ValueError("rating_metrics: no rows to evaluate")
    if row["bad"]:
        raise ValueError(f"rating_metrics: {row['bad']} of {row['n']} rows have a null or NaN {prediction_col}")
    return {"rmse": float(row["rmse"]), "mae": float(row["mae"])}


def rating_metrics_pandas(
    pdf: pd.DataFrame, label_col: str = RATING, prediction_col: str = PREDICTION
) -> dict[str, float]:
    """Reference for :func:`rating_metrics`."""
    err = pdf[prediction_col].to_numpy(float) - pdf[label_col].to_numpy(float)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def ranking_metrics(
    recs: DataFrame,
    truth: DataFrame,
    ks: list[int],
    user_col: str = USER_IDX,
    item_col: str = ITEM_IDX,
    rank_col: str = RANK,
) -> dict[str, float]:
    """precision/recall/ndcg/map/hit_rate at each k, keys like ``"ndcg@10"``, in one Spark aggregation.

    ``recs`` has one row per (user, item) with a 1-based ``rank_col``; ``truth`` lists relevant (user, item)
    pairs. Averaged over users that have at least one relevant item.
    """
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    kmax = max(ks)
    rel = truth.select(user_col, item_col).distinct()
    n_rel = rel.groupBy(user_col).agg(F.count(F.lit(1)).alias("_n_rel"))
    cum = Window.partitionBy(user_col).orderBy("_rank").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    hits = (
        recs.where(F.col(rank_col) <= kmax)
        .select(user_col, item_col, F.col(rank_col).cast("int").alias("_rank"))
        .join(rel.withColumn("_hit", F.lit(1)), [user_col, item_col], "left")
        .withColumn("_hit", F.coalesce(F.col("_hit"), F.lit(0)))
        .withColumn("_cum", F.sum("_hit").over(cum))
    )
    per_user_aggs = []
    for k in ks:
        at_k = (F.col("_rank") <= k) & (F.col("_hit") == 1)
        per_user_aggs += [
            F.sum(F.when(at_k, 1).otherwise(0)).alias(f"_hits{k}"),
            F.sum(F.when(at_k, 1.0 / F.log2(F.col("_rank") + 1)).otherwise(0.0)).alias(f"_dcg{k}"),
            F.sum(F.when(at_k, F.col("_cum") / F.col("_rank")).otherwise(0.0)).alias(f"_ap{k}"),
        ]
    per_user = n_rel.join(hits.groupBy(user_col).agg(*per_user_aggs), user_col, "left").na.fill(0)
    out = []
    for k in ks:
        m = F.least(F.lit(k), F.col("_n_rel"))
        idcg = F.aggregate(F.sequence(F.lit(1), m), F.lit(0.0), lambda acc, i: acc + 1.0 / F.log2(i + 1))
        out += [
            F.avg(F.col(f"_hits{k}") / F.lit(k)).alias(f"precision@{k}"),
            F.avg(F.col(f"_hits{k}") / F.col("_n_rel")).alias(f"recall@{k}"),
            F.avg(F.col(f"_dcg{k}") / idcg).alias(f"ndcg@{k}"),
            F.avg(F.col(f"_ap{k}") / m).alias(f"map@{k}"),
            F.avg(F.when(F.col(f"_hits{k}") > 0, 1.0).otherwise(0.0)).alias(f"hit_rate@{k}"),
        ]
    agg_row = per_user.agg(*out).first()
    assert agg_row is not None  # a global aggregate returns exactly one row
    row = agg_row.asDict()
    return {key: float(v) if v is not None else 0.0 for key, v in row.items()}


def ranking_metrics_pandas(
    recs: pd.DataFrame,
    truth: pd.DataFrame,
    ks: list[int],
    user_col: str = USER_IDX,
    item_col: str = ITEM_IDX,
    rank_col: str = RANK,
) -> dict[str, float]:
    """Reference for :func:`ranking_metrics` on pandas frames: :mod:`reelrank.ranking_metrics`, the numpy engine."""
    hits = rm.ranked_hits(recs, truth, max(ks), user_col, item_col, rank_col)
    return rm.mean_metrics(hits, ks)


PER_USER_METRICS = {"ndcg": "ndcg", "hit_rate": "hit", "recall": "recall"}
"""Metric names (as in ``metric@k`` keys) → the columns of :func:`per_user_ranking`."""


def per_user_ranking(recs: pd.DataFrame, truth: pd.DataFrame, k: int, user_col: str = USER_IDX,
                     item_col: str = ITEM_IDX, rank_col: str = RANK) -> pd.DataFrame:
    """Per user of ``truth``: ``ndcg``, ``hit`` and ``recall`` at ``k`` (0 for a user without a list), for paired
    comparisons and bootstrap intervals; the means equal :func:`ranking_metrics`'."""
    hits = rm.ranked_hits(recs, truth, k, user_col, item_col, rank_col)
    index = pd.Index(hits.users, name=user_col)
    return pd.DataFrame({column: rm.PER_USER[name](hits, k) for name, column in PER_USER_METRICS.items()},
                        index=index)


def coverage(recs: DataFrame, catalogue: DataFrame, item_col: str = ITEM_IDX) -> float:
    """Share of the catalogue's distinct items that appear in at least one recommendation list."""
    items = catalogue.select(item_col).distinct()
    row = items.join(recs.select(item_col).distinct().withColumn("_rec", F.lit(1)), item_col, "left").agg(
        F.count(F.lit(1)).alias("n"), F.count("_rec").alias("hit")
    ).first()
    assert row is not None  # a global aggregate returns exactly one row
    return float(row["hit"]) / row["n"] if row["n"] else 0.0


def coverage_pandas(recs: pd.DataFrame, catalogue: pd.DataFrame, item_col: str = ITEM_IDX) -> float:
    """Reference for :func:`coverage`."""
    cat = set(catalogue[item_col])
    return len(cat & set(recs[item_col])) / len(cat) if cat else 0.0


def novelty(recs: DataFrame, train: DataFrame, user_col: str = USER_IDX, item_col: str = ITEM_IDX) -> float:
    """Mean of ``-log2(users(i) / users)`` over recommended rows; items absent from ``train`` are skipped."""
    n_users = train.select(user_col).distinct().count()
    if n_users == 0:
        return 0.0
    share = train.groupBy(item_col).agg((F.countDistinct(user_col) / F.lit(float(n_users))).alias("_p"))
    agg_row = recs.select(item_col).join(share, item_col).agg(F.avg(-F.log2("_p"))).first()
    assert agg_row is not None  # a global aggregate returns exactly one row
    v = agg_row[0]
    return float(v) if v is not None else 0.0


def novelty_pandas(
    recs: pd.DataFrame, train: pd.DataFrame, user_col: str = USER_IDX, item_col: str = ITEM_IDX
) -> float:
    """Reference for :func:`novelty`."""
    n_users = train[user_col].nunique()
    p = train.groupby(item_col)[user_col].nunique() / n_users
    vals = [-math.log2(p[i]) for i in recs[item_col] if i in p.index]
    return float(np.mean(vals)) if vals else 0.0


def evaluate_top_n(
    recs: DataFrame,
    truth: DataFrame,
    train: DataFrame,
    ks: list[int],
    user_col: str = USER_IDX,
    item_col: str = ITEM_IDX,
    rank_col: str = RANK,
) -> dict[str, float]:
    """:func:`ranking_metrics` plus ``coverage@k`` (over ``train``'s items) and ``novelty@k`` for each k."""
    out = ranking_metrics(recs, truth, ks, user_col, item_col, rank_col)
    for k in ks:
        top = recs.where(F.col(rank_col) <= k)
        out[f"coverage@{k}"] = coverage(top, train, item_col)
        out[f"novelty@{k}"] = novelty(top, train, user_col, item_col)
    return out


def metric_rows(model: str, metrics: dict[str, float], users: int | None = None) -> list[tuple]:
    """``(model, metric, k, value, users)`` rows: ``"ndcg@10"`` -> ``("ndcg", 10)``, ``"rmse"`` -> k None."""
    return [(model, *parse_metric_key(key), float(value), users) for key, value in sorted(metrics.items())]


def metrics_frame(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """The rows of :func:`metric_rows` as a DataFrame with :data:`METRICS_SCHEMA`."""
    return spark.createDataFrame(rows, METRICS_SCHEMA)
