"""Small grid search for ALS (rank x regParam x alpha) on a leave-last-by-time validation split."""

from __future__ import annotations

import dataclasses
import itertools
import logging
from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reelrank.candidates.als import ALSSource
from reelrank.columns import RATING, RUN_DATE, USER_IDX
from reelrank.config import Config
from reelrank.evaluate import ranking_metrics, rating_metrics
from reelrank.factorize import predict_ratings
from reelrank.metric_keys import RATING_METRICS, parse_metric_key
from reelrank.splits import holdout_split

log = logging.getLogger(__name__)

TUNING_SCHEMA = T.StructType(
    [
        T.StructField("tuned_at", T.TimestampType(), False),
        T.StructField("implicit", T.BooleanType(), False),
        T.StructField("rank", T.IntegerType(), False),
        T.StructField("reg_param", T.DoubleType(), False),
        T.StructField("alpha", T.DoubleType(), False),
        T.StructField("max_iter", T.IntegerType(), False),
        T.StructField("metric", T.StringType(), False),
        T.StructField("value", T.DoubleType(), False),
        T.StructField("chosen", T.BooleanType(), False),
    ]
)

_LOWER_IS_BETTER = set(RATING_METRICS)


def _score(train: DataFrame, valid: DataFrame, cfg: Config, als_cfg) -> float:
    metric = cfg.evaluate.tune_metric
    _, k = parse_metric_key(metric)  # checked when the config loaded
    source = ALSSource(cfg.candidates[ALSSource.name], als_cfg).fit(train)
    if k is None:
        return rating_metrics(predict_ratings(source.model, valid))[metric]
    truth = valid.where(valid[RATING] >= cfg.evaluate.relevance_threshold)
    recs = source.recommend(truth.select(USER_IDX).distinct(), k)  # users without factors: the popular list
    return ranking_metrics(recs, truth, [k])[metric]


def tune_als(interactions: DataFrame, cfg: Config) -> tuple[DataFrame, dict[str, float]]:
    """Fit every grid point on the training part, score on the held-out part; returns (results, chosen values).

    The grid is ``als.tune_ranks x als.tune_reg_params x als.tune_alphas`` (alpha only in implicit mode); the
    hold-out is the nightly's (``evaluate.holdout``, ``evaluate.holdout_per_user`` per user); the metric is
    ``evaluate.tune_metric``.
    """
    train, valid = holdout_split(interactions, cfg.evaluate)
    train, valid = train.cache(), valid.cache()
    alphas = cfg.als.tune_alphas if cfg.als.implicit else [cfg.als.alpha]
    lower = cfg.evaluate.tune_metric in _LOWER_IS_BETTER
    rows = []
    for rank, reg, alpha in itertools.product(cfg.als.tune_ranks, cfg.als.tune_reg_params, alphas):
        als_cfg = dataclasses.replace(cfg.als, rank=rank, reg_param=reg, alpha=alpha)
        value = _score(train, valid, cfg, als_cfg)
        log.info("tune rank=%d reg=%g alpha=%g: %s=%.4f", rank, reg, alpha, cfg.evaluate.tune_metric, value)
        rows.append((rank, float(reg), float(alpha), value))
    train.unpersist()
    valid.unpersist()
    best = (min if lower else max)(rows, key=lambda r: r[3])
    now = datetime.now(UTC).replace(tzinfo=None)
    out = [
        (now, cfg.als.implicit, r[0], r[1], r[2], cfg.als.max_iter, cfg.evaluate.tune_metric, float(r[3]), r is best)
        for r in rows
    ]
    chosen = {"rank": best[0], "reg_param": best[1], "alpha": best[2], cfg.evaluate.tune_metric: best[3]}
    log.info("chosen ALS hyper-parameters: %s", chosen)
    return interactions.sparkSession.createDataFrame(out, TUNING_SCHEMA), chosen


def run_tuning(spark: SparkSession, cfg: Config) -> dict[str, float]:
    """Read ``{database}.interactions``, tune, append the grid to ``{database}.tuning``; returns the chosen values."""
    db = cfg.warehouse.database
    interactions = spark.table(f"{db}.interactions")
    if RUN_DATE in interactions.columns:  # a partitioned table: tune on the latest run only
        agg_row = interactions.agg(F.max(RUN_DATE)).first()
        assert agg_row is not None  # a global aggregate returns exactly one row
        latest = agg_row[0]
        interactions = interactions.where(F.col(RUN_DATE) == F.lit(latest))
    results, chosen = tune_als(interactions, cfg)
    results.write.mode("append").saveAsTable(f"{db}.tuning")
    return chosen
