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

from reelrank import candidates
from reelrank import columns as C
from reelrank.config import Config, FeaturesConfig

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86400.0
MISSING_Z = -3.0
"""The list z-score of a candidate that a source did not propose (below almost all of its own list)."""


def sources() -> tuple[str, ...]:
    """The candidate sources whose lists the ranker's features describe, in the registry's order: those declaring a
    feature prefix (:attr:`reelrank.candidates.CandidateSource.feature_prefix`)."""
    return candidates.feature_sources()


def prefix(name: str) -> str:
    """Source ``name``'s feature prefix: ``f_<prefix>_score`` (z-score in the user's list), ``f_<prefix>_rank``."""
    p = candidates.source_class(name).feature_prefix
    if p is None:
        raise ValueError(f"candidate source {name!r} feeds no ranker feature")
    return p


def membership_only(name: str) -> bool:
    """Whether source ``name``'s list says only "proposed or not" (``f_in_<name>``): its scores are the same for
    every user."""
    return candidates.source_class(name).membership_only


def missing_rank(cfg: Config) -> float:
    """The rank feature of a candidate a source did not propose: one past the longest list."""
    return float(max(candidates.list_length(cfg, name) for name in sources()) + 1)


def genre_affinity(history: DataFrame, items: DataFrame, pairs: DataFrame) -> DataFrame:
    """``pairs`` with ``f_genre_affinity``: the mean over the item's genres of the share of the user's history in
    that genre (0 for an item without genres or a user without history). Each user's shares travel as one map
    and the items' genres as a broadcast, so the pairs are not shuffled (issue 15)."""
    # one row per item (the smallest genre list if the metadata repeats an item), no null genre
    item_genres = items.groupBy(C.ITEM_IDX).agg(
        F.min(F.filter(C.GENRES, lambda g: g.isNotNull())).alias("_genres"))
    per_genre = (
        history.select(C.USER_IDX, C.ITEM_IDX)
        .join(F.broadcast(item_genres.select(C.ITEM_IDX, F.explode("_genres").alias("_genre"))), C.ITEM_IDX)
        .groupBy(C.USER_IDX, "_genre")
        .agg(F.count(F.lit(1)).alias("_c"))
    )
    user_total = history.groupBy(C.USER_IDX).agg(F.count(F.lit(1)).alias("_t"))
    shares = (
        per_genre.join(user_total, C.USER_IDX)
        .groupBy(C.USER_IDX)
        .agg(F.map_from_entries(F.collect_list(F.struct("_genre", F.col("_c") / F.col("_t")))).alias("_share"))
    )
    share_sum = F.aggregate(
        F.transform("_genres", lambda g: F.coalesce(F.element_at("_share", g), F.lit(0.0))), F.lit(0.0),
        lambda acc, x: acc + x)
    return (
        pairs.join(F.broadcast(item_genres), C.ITEM_IDX, "left")
        .join(F.broadcast(shares), C.USER_IDX, "left")
        .withColumn("f_genre_affinity", F.coalesce(share_sum / F.greatest(F.size("_genres"), F.lit(1)), F.lit(0.0)))
        .drop("_genres", "_share")
    )


def build_features(
    history: DataFrame,
    items: DataFrame,
    lists: Mapping[str, DataFrame],
    missing_rank: float,
    labels: DataFrame | None = None,
) -> DataFrame:
    """Union the candidate lists and attach features (and a 0/1 label when ``labels`` is given).

    ``lists`` holds the (user_idx, item_idx, score, rank) lists of :func:`sources` (those given), seen items
    removed; ``missing_rank`` is the rank feature of a candidate a source did not propose (:func:`missing_rank`).
    The lists are shuffled once, by user: each source's z-scores and the union per (user, item) reuse that
    partitioning, and the per-user and per-item statistics join as broadcasts.
    """
    names = [name for name in sources() if name in lists]
    if not names:
        raise ValueError(f"build_features needs the list of at least one of {', '.join(sources())}")

    tagged = None
    for i, name in enumerate(names):
        one = lists[name].select(C.USER_IDX, C.ITEM_IDX, C.SCORE, C.RANK, F.lit(i).alias("_src"))
        tagged = one if tagged is None else tagged.unionByName(one)
    assert tagged is not None
    # Scores as z-scores within the user's list: raw ALS/neighbour scores grow with the amount of history, so a
    # model trained on the history fit would see a different scale on the full fit it scores.
    w = Window.partitionBy(C.USER_IDX, "_src")
    sd = F.stddev_pop(C.SCORE).over(w)
    z = (F.col(C.SCORE) - F.avg(C.SCORE).over(w)) / F.when(sd > 0, sd).otherwise(F.lit(1.0))
    scored = tagged.repartition(C.USER_IDX).select(C.USER_IDX, C.ITEM_IDX, "_src", z.alias("_z"), C.RANK)
    per_source = []
    for i, name in enumerate(names):
        mine = F.col("_src") == i
        if not membership_only(name):
            per_source.append(F.max(F.when(mine, F.col("_z"))).alias(f"f_{prefix(name)}_score"))
        per_source.append(F.max(F.when(mine, F.col(C.RANK))).alias(f"_{prefix(name)}_rank"))
    cands = scored.groupBy(C.USER_IDX, C.ITEM_IDX).agg(*per_source)

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
    out = genre_affinity(
        history, items,
        cands.join(F.broadcast(item_stats), C.ITEM_IDX, "left").join(F.broadcast(user_stats), C.USER_IDX, "left"))
    fills = {"f_item_pop": -log_item_mean, "f_item_mean": global_mean, "f_item_age": 0.0,
             "f_item_recency": math.log1p(1e4), "f_genre_affinity": 0.0, "f_user_count": -log_user_mean,
             "f_user_mean": global_mean, "f_user_std": 0.0}
    for name in names:
        rank = F.col(f"_{prefix(name)}_rank")
        if membership_only(name):
            out = out.withColumn(f"f_in_{name}", rank.isNotNull().cast("double"))
        else:
            out = out.withColumn(f"f_{prefix(name)}_rank",
                                 F.log1p(F.coalesce(rank.cast("double"), F.lit(missing_rank))))
            fills[f"f_{prefix(name)}_score"] = MISSING_Z
    out = out.fillna(fills)
    if labels is None:
        out = out.withColumn(C.LABEL, F.lit(0.0))
    else:
        marked = labels.select(C.USER_IDX, C.ITEM_IDX).distinct().withColumn("_hit", F.lit(1.0))
        out = (out.join(F.broadcast(marked), [C.USER_IDX, C.ITEM_IDX], "left")
               .withColumn(C.LABEL, F.coalesce("_hit", F.lit(0.0))))
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
