"""Candidates per user (the union of the feature sources' lists, seen items removed) with ranking features.

Every feature is computed from the interaction history the candidates came from, so a model trained
on labels from a later window never sees the future. Features are float columns named ``f_*``; the
trainer discovers them from the Parquet schema.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reelrank import columns as C
from reelrank.candidates import list_length
from reelrank.config import FEATURE_SOURCES, Config, FeaturesConfig

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86400.0
MISSING_Z = -3.0
"""The list z-score of a candidate that a source did not propose (below almost all of its own list)."""


SOURCES: tuple[str, ...] = FEATURE_SOURCES
"""The candidate sources whose lists the ranker's features describe (each must be in ``[candidates] sources``)."""
PREFIX = {"als": "als", "item_neighbours": "nb", "popular": "pop", "ease": "ease", "sasrec": "sasrec"}
"""Each source's feature prefix: ``f_<prefix>_score`` (z-score in the user's list), ``f_<prefix>_rank``."""
MEMBERSHIP_ONLY = ("popular",)
"""Sources whose list says only "proposed or not" (``f_in_<source>``): their scores are the same for every user."""


def missing_rank(cfg: Config) -> float:
    """The rank feature of a candidate a source did not propose: one past the longest list."""
    return float(max(list_length(cfg, name) for name in SOURCES) + 1)


def genre_affinity(history: DataFrame, items: DataFrame, pairs: DataFrame) -> DataFrame:
    """Mean over the item's genres of the share of the user's history in that genre."""
    item_genres = items.select(C.ITEM_IDX, F.explode_outer(C.GENRES).alias("_genre"))
    n_genres = item_genres.groupBy(C.ITEM_IDX).agg(F.count("_genre").alias("_ng"))
    user_genre = (
        history.select(C.USER_IDX, C.ITEM_IDX)
        .join(item_genres, C.ITEM_IDX)
        .groupBy(C.USER_IDX, "_genre")
        .agg(F.count(F.lit(1)).alias("_c"))
    )
    user_total = history.groupBy(C.USER_IDX).agg(F.count(F.lit(1)).alias("_t"))
    share = user_genre.join(user_total, C.USER_IDX).select(
        C.USER_IDX, "_genre", (F.col("_c") / F.col("_t")).alias("_s")
    )
    affinity = (
        pairs.select(C.USER_IDX, C.ITEM_IDX)
        .join(item_genres, C.ITEM_IDX)
        .join(share, [C.USER_IDX, "_genre"])
        .groupBy(C.USER_IDX, C.ITEM_IDX)
        .agg(F.sum("_s").alias("_sum"))
        .join(n_genres, C.ITEM_IDX)
        .select(C.USER_IDX, C.ITEM_IDX, (F.col("_sum") / F.greatest(F.col("_ng"), F.lit(1))).alias("f_genre_affinity"))
    )
    return affinity


def build_features(
    history: DataFrame,
    items: DataFrame,
    lists: Mapping[str, DataFrame],
    missing_rank: float,
    labels: DataFrame | None = None,
) -> DataFrame:
    """Union the candidate lists and attach features (and a 0/1 label when ``labels`` is given).

    ``lists`` holds the (user_idx, item_idx, score, rank) lists of :data:`SOURCES` (those given), seen items
    removed; ``missing_rank`` is the rank feature of a candidate a source did not propose (:func:`missing_rank`).
    """
    names = [name for name in SOURCES if name in lists]
    if not names:
        raise ValueError(f"build_features needs the list of at least one of {', '.join(SOURCES)}")

    def source(df: DataFrame, name: str) -> DataFrame:
        # Scores as z-scores within the user's list: raw ALS/neighbour scores grow with the amount of history, so
        # a model trained on the history fit would see a different scale on the full fit it scores.
        w = Window.partitionBy(C.USER_IDX)
        sd = F.stddev_pop(C.SCORE).over(w)
        z = (F.col(C.SCORE) - F.avg(C.SCORE).over(w)) / F.when(sd > 0, sd).otherwise(F.lit(1.0))
        return df.select(C.USER_IDX, C.ITEM_IDX, z.alias(f"f_{name}_score"), F.col(C.RANK).alias(f"_{name}_rank"))

    cands = None
    for name in names:
        one = source(lists[name], PREFIX[name])
        if name in MEMBERSHIP_ONLY:
            one = one.drop(f"f_{PREFIX[name]}_score")
        cands = one if cands is None else cands.join(one, [C.USER_IDX, C.ITEM_IDX], "full_outer")
    assert cands is not None
    agg_row = history.agg(
        F.max(C.TS), F.count(F.lit(1)), F.countDistinct(C.USER_IDX), F.countDistinct(C.ITEM_IDX), F.avg(C.RATING)
    ).first()
    assert agg_row is not None  # a global aggregate returns exactly one row
    ref_ts, n_rows, n_users, n_items, global_mean = agg_row
    # Counts relative to the mean count (log ratio): the model learns on a shorter history than it scores on,
    # and absolute counts would look larger at scoring time than they did in training. An entity without
    # history counts as one rating.
    log_item_mean = math.log(max(n_rows / max(n_items, 1), 1.0))
    log_user_mean = math.log(max(n_rows / max(n_users, 1), 1.0))
    item_stats = history.groupBy(C.ITEM_IDX).agg(
        (F.log(F.count(F.lit(1))) - F.lit(log_item_mean)).alias("f_item_pop"),
        F.avg(C.RATING).alias("f_item_mean"),
        F.log1p((F.lit(ref_ts) - F.min(C.TS)) / SECONDS_PER_DAY).alias("f_item_age"),
        F.log1p((F.lit(ref_ts) - F.max(C.TS)) / SECONDS_PER_DAY).alias("f_item_recency"),
    )
    user_stats = history.groupBy(C.USER_IDX).agg(
        (F.log(F.count(F.lit(1))) - F.lit(log_user_mean)).alias("f_user_count"),
        F.avg(C.RATING).alias("f_user_mean"),
        F.coalesce(F.stddev_pop(C.RATING), F.lit(0.0)).alias("f_user_std"),
    )
    out = (
        cands.join(item_stats, C.ITEM_IDX, "left")
        .join(user_stats, C.USER_IDX, "left")
        .join(genre_affinity(history, items, cands), [C.USER_IDX, C.ITEM_IDX], "left")
    )
    fills = {"f_item_pop": -log_item_mean, "f_item_mean": global_mean, "f_item_age": 0.0,
             "f_item_recency": math.log1p(1e4), "f_genre_affinity": 0.0, "f_user_count": -log_user_mean,
             "f_user_mean": global_mean, "f_user_std": 0.0}
    for name in names:
        rank = F.col(f"_{PREFIX[name]}_rank")
        if name in MEMBERSHIP_ONLY:
            out = out.withColumn(f"f_in_{name}", rank.isNotNull().cast("double"))
        else:
            out = out.withColumn(f"f_{PREFIX[name]}_rank",
                                 F.log1p(F.coalesce(rank.cast("double"), F.lit(missing_rank))))
            fills[f"f_{PREFIX[name]}_score"] = MISSING_Z
    out = out.fillna(fills)
    if labels is None:
        out = out.withColumn(C.LABEL, F.lit(0.0))
    else:
        marked = labels.select(C.USER_IDX, C.ITEM_IDX).distinct().withColumn("_hit", F.lit(1.0))
        out = out.join(marked, [C.USER_IDX, C.ITEM_IDX], "left").withColumn(C.LABEL, F.coalesce("_hit", F.lit(0.0)))
    feature_cols = sorted(c for c in out.columns if c.startswith("f_"))
    return out.select(
        F.col(C.USER_IDX).cast(T.IntegerType()),
        F.col(C.ITEM_IDX).cast(T.IntegerType()),
        F.col(C.LABEL).cast(T.FloatType()),
        *[F.col(c).cast(T.FloatType()) for c in feature_cols],
    )


def is_validation_user(val_fraction: float) -> F.Column:
    """A stable per-user assignment to the validation side (hash of the user index)."""
    buckets = 1000
    return (F.abs(F.hash(F.col(C.USER_IDX))) % buckets) < int(round(val_fraction * buckets))


def write_shards(df: DataFrame, path: str, cfg: FeaturesConfig) -> None:
    """Write Parquet shards with row groups of about ``rows_per_row_group`` rows.

    Parquet sizes row groups in bytes, so the byte size is derived from the row width (4-byte columns).
    """
    row_bytes = 4 * len(df.columns)
    (
        df.repartition(cfg.files_per_split)
        .write.mode("overwrite")
        .option("parquet.block.size", str(cfg.rows_per_row_group * row_bytes))
        .option("compression", "snappy")
        .parquet(path)
    )
