"""Train/test splits: the official ml-100k folds, per-user stratified random, per-user leave-last-by-time, per-user
leave-random-out, a global time split at a quantile, and the nightly's global time window."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reelrank.columns import ITEM, ITEM_IDX, RATING, TS, USER, USER_IDX, origin_columns
from reelrank.config import EvaluateConfig

log = logging.getLogger(__name__)

_ML100K_SCHEMA = T.StructType(
    [
        T.StructField(USER, T.IntegerType(), False),
        T.StructField(ITEM, T.IntegerType(), False),
        T.StructField(RATING, T.DoubleType(), False),
        T.StructField(TS, T.LongType(), False),
    ]
)


def _with_indices(df: DataFrame) -> DataFrame:
    """ml-100k ids are already dense integers, so they double as ``user_idx`` / ``item_idx``."""
    return df.withColumn(USER_IDX, F.col(USER).cast("int")).withColumn(ITEM_IDX, F.col(ITEM).cast("int"))


def read_ml100k_fold(spark: SparkSession, folder: str | Path, fold: str) -> tuple[DataFrame, DataFrame]:
    """The official fold ``fold`` (``u1`` .. ``u5``, ``ua``, ``ub``) of ml-100k: ``(train, test)``.

    Columns: user_id, item_id, rating, ts, user_idx, item_idx (indices equal the ml-100k ids).
    """
    folder = Path(folder)
    out = []
    for part in ("base", "test"):
        path = folder / f"{fold}.{part}"
        if not path.is_file():
            raise FileNotFoundError(f"ml-100k fold file not found: {path}")
        out.append(_with_indices(spark.read.csv(str(path), sep="\t", schema=_ML100K_SCHEMA)))
    return out[0], out[1]


def read_stratified_split(spark: SparkSession, folder: str | Path) -> tuple[DataFrame, DataFrame]:
    """The fixed ``train.csv`` / ``test.csv`` split (columns user,item,rating,timestamp) with reelrank's columns."""
    folder = Path(folder)
    out = []
    for name in ("train.csv", "test.csv"):
        schema = "user INT, item INT, rating DOUBLE, timestamp LONG"
        raw = spark.read.csv(str(folder / name), header=True, schema=schema)
        out.append(
            _with_indices(
                raw.select(
                    F.col("user").alias(USER), F.col("item").alias(ITEM), F.col(RATING), F.col("timestamp").alias(TS)
                )
            )
        )
    return out[0], out[1]


def stratified_split(
    df: DataFrame, ratio: float, seed: int, user_col: str = USER_IDX
) -> tuple[DataFrame, DataFrame]:
    """Per-user random split: a row goes to train when its position in the user's shuffled rows / count <= ratio.

    (The rule of the recommenders project's ``python_stratified_split``.) Every user keeps at least one row in
    train. Reproducible for a given input partitioning.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    w = Window.partitionBy(user_col).orderBy("_rand")
    marked = (
        df.withColumn("_rand", F.rand(seed))
        .withColumn("_pos", F.row_number().over(w))
        .withColumn("_n", F.count(F.lit(1)).over(Window.partitionBy(user_col)))
        .withColumn("_train", ((F.col("_pos") / F.col("_n")) <= F.lit(ratio)) | (F.col("_pos") == 1))
        .drop("_rand", "_pos", "_n")
    )
    return _partition(marked)


def leave_last_by_time(
    df: DataFrame, n: int, user_col: str = USER_IDX, ts_col: str = TS, item_col: str = ITEM_IDX
) -> tuple[DataFrame, DataFrame]:
    """Hold out each user's ``n`` most recent interactions; users with ``<= n`` interactions keep all in train.

    Ties in time are broken by input order (a later ``source_file``/``source_row`` is more recent) where the
    frame has it, then by ``item_col`` (descending), so the split is deterministic.
    """
    order = origin_columns(df.columns)
    return _hold_out_first(df, n, user_col, *[F.col(c).desc() for c in (ts_col, *order, item_col)])


def leave_random_out(
    df: DataFrame, n: int, user_col: str = USER_IDX, item_col: str = ITEM_IDX
) -> tuple[DataFrame, DataFrame]:
    """Hold out ``n`` interactions per user drawn at random; users with ``<= n`` interactions keep all in train.

    The draw is a hash of (user, item), so it does not depend on partitioning or on the run.
    """
    return _hold_out_first(df, n, user_col, F.xxhash64(user_col, item_col), F.col(item_col))


def _hold_out_first(df: DataFrame, n: int, user_col: str, *order: Column) -> tuple[DataFrame, DataFrame]:
    """Hold out each user's first ``n`` rows in ``order``; users with ``<= n`` rows keep all in train."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    marked = (
        df.withColumn("_pos", F.row_number().over(Window.partitionBy(user_col).orderBy(*order)))
        .withColumn("_n", F.count(F.lit(1)).over(Window.partitionBy(user_col)))
        .withColumn("_train", (F.col("_n") <= n) | (F.col("_pos") > n))
        .drop("_pos", "_n")
    )
    return _partition(marked)


SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class TimeWindow:
    """Where :func:`time_window_split` cut: the window's first second, its length and its active users."""

    cut: int
    days: float
    users: int
    asked_days: int

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.cut, UTC).strftime("%Y-%m-%d %H:%M")
        widened = f", widened from {self.asked_days} to reach more users" if self.days > self.asked_days else ""
        return f"the last {self.days:.3g} days (from {when} UTC{widened}): {self.users:,} users active before and in it"


def choose_window(df: DataFrame, days: int, min_users: int, max_share: float, user_col: str = USER_IDX,
                  ts_col: str = TS) -> TimeWindow:
    """The latest cut, ``days`` or more whole days before the last interaction, after which at least ``min_users``
    users who were active before it are active again; it moves back a day at a time, never so far that the window
    holds more than ``max_share`` of the interactions (data spanning less than ``days`` get that share as their
    window). Decided by the data alone (its last timestamp), not the clock.
    """
    spans: pd.DataFrame = df.groupBy(user_col).agg(F.min(ts_col).alias("first"), F.max(ts_col).alias("last")).toPandas()
    if spans.empty:
        raise ValueError("no interactions to split")
    firsts, lasts = np.sort(spans["first"].to_numpy()), np.sort(spans["last"].to_numpy())
    end = int(lasts[-1])
    floor = df.approxQuantile(ts_col, [1.0 - max_share], 0.001)[0]

    def active(cut: int) -> int:  # users with first < cut <= last
        return int(np.searchsorted(firsts, cut, "left") - np.searchsorted(lasts, cut, "left"))

    n = days
    cut = end - n * SECONDS_PER_DAY
    if cut <= floor:  # the data span less than the window: it holds the last max_share of the interactions
        cut = int(floor) + 1
    while active(cut) < min_users and end - (n + 1) * SECONDS_PER_DAY > floor:
        n += 1
        cut = end - n * SECONDS_PER_DAY
    return TimeWindow(cut, (end - cut) / SECONDS_PER_DAY, active(cut), days)


def time_window_split(df: DataFrame, window: TimeWindow, user_col: str = USER_IDX, item_col: str = ITEM_IDX,
                      ts_col: str = TS) -> tuple[DataFrame, DataFrame]:
    """(history, holdout) at ``window.cut``: the holdout is every interaction in the window of a user and an item
    seen before it, on a pair not seen before it (what warm users did next; every such item counts)."""
    return split_at(df, window.cut, user_col, item_col, ts_col)


def split_at(df: DataFrame, cut: float, user_col: str = USER_IDX, item_col: str = ITEM_IDX,
             ts_col: str = TS) -> tuple[DataFrame, DataFrame]:
    """(before, after) at time ``cut``: ``after`` keeps the later interactions of users and items seen before it, on
    pairs not seen before it (no cold users or items, nothing to re-recommend)."""
    before = df.where(F.col(ts_col) < F.lit(cut))
    later = df.where(F.col(ts_col) >= F.lit(cut))
    after = (
        later.join(before.select(user_col).distinct(), user_col, "left_semi")
        .join(before.select(item_col).distinct(), item_col, "left_semi")
        .join(before.select(user_col, item_col), [user_col, item_col], "left_anti")
    )
    return before, after


def holdout_split(df: DataFrame, ev: EvaluateConfig) -> tuple[DataFrame, DataFrame]:
    """The nightly's (history, holdout) by ``ev.holdout``: a global time window (``"window"``,
    :func:`choose_window`: what users did after a date, the question a nightly answers; Gusak et al., "Time to
    Split", RecSys 2025), each user's ``ev.holdout_per_user`` latest interactions (``"latest"``) or as many random
    ones (``"random"``: the protocol of random per-user splits)."""
    if ev.holdout == "window":
        window = choose_window(df, ev.holdout_days, ev.holdout_min_users, ev.holdout_max_share)
        log.info("holdout: %s", window.describe())
        return time_window_split(df, window)
    if ev.holdout == "latest":
        return leave_last_by_time(df, ev.holdout_per_user)
    if ev.holdout == "random":
        return leave_random_out(df, ev.holdout_per_user)
    raise ValueError(f"unknown holdout {ev.holdout!r}: expected 'window', 'latest' or 'random'")


def global_time_split(
    df: DataFrame, quantile: float, user_col: str = USER_IDX, item_col: str = ITEM_IDX, ts_col: str = TS
) -> tuple[DataFrame, DataFrame]:
    """Everything before the ``quantile`` of time trains; the test keeps the later interactions of users and items
    seen in train, on pairs not in train (no cold users or items, nothing to re-recommend)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    return split_at(df, df.approxQuantile(ts_col, [quantile], 0.0)[0], user_col, item_col, ts_col)


def _partition(marked: DataFrame) -> tuple[DataFrame, DataFrame]:
    train = marked.where(F.col("_train")).drop("_train")
    test = marked.where(~F.col("_train")).drop("_train")
    return train, test
