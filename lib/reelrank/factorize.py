"""Matrix factorisation with Spark ML ALS: fit, predict, blocked top-N.

Explicit mode fits ratings (optionally a global mean plus regularised user/item biases first, ALS on
the residual); implicit mode fits confidences ``1 + alpha * r``. Users or items unseen in training
never produce NaN: missing factors count as zero, missing biases as zero. ``recommend_top_n`` lists users
with factors; the ALS candidate source (:mod:`reelrank.candidates.als`) gives the others the popular list.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.ml.recommendation import ALS
from pyspark.ml.recommendation import ALSModel as SparkALSModel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from reelrank.columns import ITEM_IDX, PREDICTION, RANK, RATING, SCORE, USER_IDX
from reelrank.config import ALSConfig
from reelrank.popularity import RECS_SCHEMA

log = logging.getLogger(__name__)

FEATURES = "features"
_RESIDUAL = "_residual"
SEEN = "_seen"

@dataclass(frozen=True)
class FactorModel:
    """A fitted ALS model plus what is needed to predict and recommend without NaN.

    ``user_factors`` / ``item_factors`` are the vectors whose dot product is the model's score: the ALS
    factors, or in explicit mode with biases ``[a*u_res, b*u_plain, 1, (1-w)(mu+b_u)]`` and
    ``[a*v_res, b*v_plain, (1-w)b_i, 1]`` (``a = sqrt(1-w)``, ``b = sqrt(w)``, ``w = plain_weight``), so that the
    dot product is the full blended rating prediction and top-N ranks by it.
    """

    als: SparkALSModel
    """The (first) Spark model, for Spark's own ``recommendForAllUsers`` in benchmarks."""
    user_factors: DataFrame
    """``(user_idx, features array<float>)``, cached."""
    item_factors: DataFrame
    implicit: bool
    global_mean: float
    """0 in implicit mode and when biases are off."""
    user_bias: DataFrame | None
    """``(user_idx, user_bias)``; None without biases. Used for pairs that lack a factor."""
    item_bias: DataFrame | None
    rating_bounds: tuple[float, float] | None
    """Predictions are clipped to this range (explicit mode with ``clip_predictions``)."""
    block_users: int


def _require_checkpoint_dir(ratings: DataFrame, cfg: ALSConfig) -> None:
    if cfg.checkpoint_interval > 0 and ratings.sparkSession.sparkContext.getCheckpointDir() is None:
        raise ValueError(
            f"als.checkpoint_interval = {cfg.checkpoint_interval} needs a checkpoint dir: build the session with "
            "reelrank.session.build_spark (it calls sparkContext.setCheckpointDir) or set als.checkpoint_interval = 0"
        )


def fit_biases(
    ratings: DataFrame, reg_user: float, reg_item: float, n_iter: int
) -> tuple[float, DataFrame, DataFrame]:
    """Global mean and ridge-regularised user/item biases by alternating least squares.

    ``b_i = sum(r - mu - b_u) / (reg_item + n_i)``, then ``b_u = sum(r - mu - b_i) / (reg_user + n_u)``
    (the baseline of Koren 2010 / surprise's ``baseline_options``). Returns cached bias frames.
    """
    agg_row = ratings.agg(F.avg(RATING)).first()
    assert agg_row is not None  # a global aggregate returns exactly one row
    mu = float(agg_row[0])
    r = ratings.select(USER_IDX, ITEM_IDX, (F.col(RATING) - F.lit(mu)).alias("_r")).cache()
    users = r.select(USER_IDX).distinct()
    bu = users.withColumn("user_bias", F.lit(0.0)).cache()
    bi = None
    for _ in range(max(n_iter, 1)):
        new_bi = (
            r.join(bu, USER_IDX)
            .groupBy(ITEM_IDX)
            .agg((F.sum(F.col("_r") - F.col("user_bias")) / (F.lit(reg_item) + F.count(F.lit(1)))).alias("item_bias"))
            .localCheckpoint()
        )
        new_bu = (
            r.join(new_bi, ITEM_IDX)
            .groupBy(USER_IDX)
            .agg((F.sum(F.col("_r") - F.col("item_bias")) / (F.lit(reg_user) + F.count(F.lit(1)))).alias("user_bias"))
            .localCheckpoint()
        )
        bu.unpersist()
        bi, bu = new_bi, new_bu
    r.unpersist()
    assert bi is not None  # the loop above runs at least once
    return mu, bu, bi


def _spark_als(cfg: ALSConfig, rating_col: str) -> ALS:
    return ALS(
        rank=cfg.rank,
        maxIter=cfg.max_iter,
        regParam=cfg.reg_param,
        implicitPrefs=cfg.implicit,
        alpha=cfg.alpha,
        nonnegative=cfg.nonnegative,
        numUserBlocks=cfg.blocks,
        numItemBlocks=cfg.blocks,
        checkpointInterval=cfg.checkpoint_interval if cfg.checkpoint_interval > 0 else -1,
        seed=cfg.seed,
        userCol=USER_IDX,
        itemCol=ITEM_IDX,
        ratingCol=rating_col,
        coldStartStrategy="nan",
    )


def _frames(model: SparkALSModel, scale: float = 1.0) -> tuple[DataFrame, DataFrame]:
    def one(df: DataFrame, col: str) -> DataFrame:
        feats = F.col(FEATURES) if scale == 1.0 else F.transform(FEATURES, lambda x: x * F.lit(scale))
        return df.select(F.col("id").alias(col), feats.cast("array<float>").alias(FEATURES))

    return one(model.userFactors, USER_IDX), one(model.itemFactors, ITEM_IDX)


def _concat(left: DataFrame, right: DataFrame, key: str) -> DataFrame:
    return left.join(right.withColumnRenamed(FEATURES, "_r"), key).select(
        key, F.concat(FEATURES, "_r").alias(FEATURES)
    )


def fit_als(ratings: DataFrame, cfg: ALSConfig) -> FactorModel:
    """Fit Spark ALS on ``(user_idx, item_idx, rating)``; explicit or implicit per ``cfg.implicit``.

    Explicit with ``biases``: global mean + ridge biases, ALS on the residual, optionally blended with a second
    ALS on the raw ratings (``plain_weight``; the two models' errors differ, which lowers RMSE on ml-100k).
    """
    _require_checkpoint_dir(ratings, cfg)
    data = ratings.select(
        F.col(USER_IDX).cast("int").alias(USER_IDX),
        F.col(ITEM_IDX).cast("int").alias(ITEM_IDX),
        F.col(RATING).cast("double").alias(RATING),
    )
    use_biases = cfg.biases and not cfg.implicit
    mu, bu, bi, bounds = 0.0, None, None, None
    if cfg.clip_predictions and not cfg.implicit:
        agg_row = data.agg(F.min(RATING), F.max(RATING)).first()
        assert agg_row is not None  # a global aggregate returns exactly one row
        lo, hi = agg_row
        bounds = (float(lo), float(hi))
    if not use_biases:
        first = _spark_als(cfg, RATING).fit(data)
        user_f, item_f = _frames(first)
    else:
        w = cfg.plain_weight
        if not 0.0 <= w < 1.0:
            raise ValueError(f"als.plain_weight must be in [0, 1), got {w}")
        mu, bu, bi = fit_biases(data, cfg.bias_reg_user, cfg.bias_reg_item, cfg.bias_iter)
        residual = (
            data.join(bu, USER_IDX)
            .join(bi, ITEM_IDX)
            .withColumn(_RESIDUAL, F.col(RATING) - F.lit(mu) - F.col("user_bias") - F.col("item_bias"))
        )
        first = _spark_als(cfg, _RESIDUAL).fit(residual)
        user_f, item_f = _frames(first, (1.0 - w) ** 0.5)
        if w > 0:
            plain_u, plain_i = _frames(_spark_als(cfg, RATING).fit(data), w**0.5)
            user_f, item_f = _concat(user_f, plain_u, USER_IDX), _concat(item_f, plain_i, ITEM_IDX)
        base_u = F.array(F.lit(1.0), (1.0 - w) * (F.lit(mu) + F.col("user_bias"))).cast("array<float>")
        base_i = F.array((1.0 - w) * F.col("item_bias"), F.lit(1.0)).cast("array<float>")
        user_f = user_f.join(bu, USER_IDX).select(USER_IDX, F.concat(FEATURES, base_u).alias(FEATURES))
        item_f = item_f.join(bi, ITEM_IDX).select(ITEM_IDX, F.concat(FEATURES, base_i).alias(FEATURES))
    user_f, item_f = user_f.cache(), item_f.cache()
    log.info(
        "ALS %s rank=%d reg=%g iter=%d alpha=%g biases=%s plain_weight=%g: %d users, %d items",
        "implicit" if cfg.implicit else "explicit", cfg.rank, cfg.reg_param, cfg.max_iter, cfg.alpha, use_biases,
        cfg.plain_weight if use_biases else 0.0, user_f.count(), item_f.count(),
    )
    return FactorModel(first, user_f, item_f, cfg.implicit, mu, bu, bi, bounds, cfg.topn_block_users)


def fold_in(model: FactorModel, ratings: DataFrame, cfg: ALSConfig) -> FactorModel:
    """``model`` with every user of ``ratings`` given the factors Spark's implicit ALS would solve for them against
    the fitted item factors (one user half-step, Hu, Koren & Volinsky 2008 with ALS-WR's ``reg_param × n_u``):
    ``(YᵀY + Σ αr·y yᵀ + λ n_u I) x = Σ (1 + αr)·y`` over the user's rated items with a factor (rating > 0 counts
    toward ``n_u`` and the right side). Serving tonight's interactions without a second fit (issue 15)."""
    if not model.implicit or model.user_bias is not None:
        raise ValueError("fold-in needs an implicit ALS model without biases")
    item_pdf: pd.DataFrame = model.item_factors.toPandas()
    item_pdf = item_pdf.sort_values(ITEM_IDX)
    rank = len(item_pdf[FEATURES].iloc[0]) if len(item_pdf) else cfg.rank
    width = int(item_pdf[ITEM_IDX].max()) + 1 if len(item_pdf) else 0
    y = np.zeros((width, rank))
    has = np.zeros(width, bool)
    if len(item_pdf):
        y[item_pdf[ITEM_IDX].to_numpy()] = np.stack(item_pdf[FEATURES].to_numpy())
        has[item_pdf[ITEM_IDX].to_numpy()] = True
    bc = ratings.sparkSession.sparkContext.broadcast((y, has, y.T @ y))
    alpha, reg, block = cfg.alpha, cfg.reg_param, model.block_users

    def frame(users: list[int], factors: list[np.ndarray]) -> pd.DataFrame:
        return pd.DataFrame({USER_IDX: users, FEATURES: [f.astype(np.float32) for f in factors]})

    def solve(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        y, has, yty = bc.value
        for pdf in batches:
            users, factors = [], []
            for user, items, rates in zip(pdf[USER_IDX], pdf["_items"], pdf["_ratings"], strict=True):
                items, rates = np.asarray(items, np.int64), np.asarray(rates, np.float64)
                ok = items < len(has)
                ok[ok] = has[items[ok]]
                items, rates = items[ok], rates[ok]
                if not len(items):
                    continue
                yu, c1 = y[items], alpha * np.abs(rates)
                positive = rates > 0
                a = yty + (yu.T * c1) @ yu + reg * positive.sum() * np.eye(len(yty))
                users.append(user)
                factors.append(np.linalg.solve(a, yu.T @ np.where(positive, 1.0 + c1, 0.0)))
                if len(users) == block:
                    yield frame(users, factors)
                    users, factors = [], []
            if users:
                yield frame(users, factors)

    per_user = ratings.groupBy(F.col(USER_IDX).cast("int").alias(USER_IDX)).agg(
        F.collect_list(F.col(ITEM_IDX).cast("long")).alias("_items"),
        F.collect_list(F.col(RATING).cast("double")).alias("_ratings"))
    user_f = per_user.mapInPandas(solve, f"{USER_IDX} int, {FEATURES} array<float>").cache()
    return dataclasses.replace(model, user_factors=user_f)


def factor_frames(model: FactorModel) -> tuple[DataFrame, DataFrame]:
    """``user_factors(user_idx, features array<float>)`` and ``item_factors(item_idx, features array<float>)``.

    Their dot product is the model's score (the predicted rating in explicit mode with biases).
    """
    return model.user_factors, model.item_factors


def _dot(a: Column, b: Column) -> Column:
    """Dot product of two array columns in SQL (no Python UDF); 0 when either side is null."""
    prod = F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0).cast("double"), lambda acc, x: acc + x)
    return F.coalesce(prod, F.lit(0.0))


def predict_ratings(model: FactorModel, pairs: DataFrame) -> DataFrame:
    """``pairs`` with a ``prediction`` column; never NaN.

    A pair with both factors gets their dot product (plus nothing else: biases live inside the vectors); a pair
    missing either falls back to ``mean + user bias + item bias`` (each 0 when unknown or when biases are off).
    """
    users, items = factor_frames(model)
    out = pairs.join(users.withColumnRenamed(FEATURES, "_uf"), USER_IDX, "left").join(
        items.withColumnRenamed(FEATURES, "_if"), ITEM_IDX, "left"
    )
    fallback = F.lit(model.global_mean)
    drop = ["_uf", "_if"]
    if model.user_bias is not None and model.item_bias is not None:
        out = out.join(model.user_bias.withColumnRenamed("user_bias", "_bu"), USER_IDX, "left").join(
            model.item_bias.withColumnRenamed("item_bias", "_bi"), ITEM_IDX, "left"
        )
        fallback = fallback + F.coalesce(F.col("_bu"), F.lit(0.0)) + F.coalesce(F.col("_bi"), F.lit(0.0))
        drop += ["_bu", "_bi"]
    warm = F.col("_uf").isNotNull() & F.col("_if").isNotNull()
    pred = F.when(warm, _dot(F.col("_uf"), F.col("_if"))).otherwise(fallback)
    if model.rating_bounds is not None:
        lo, hi = model.rating_bounds
        pred = F.least(F.greatest(pred, F.lit(lo)), F.lit(hi))
    return out.withColumn(PREDICTION, pred.cast("double")).drop(*drop)


def top_n_block(
    user_ids: np.ndarray,
    user_factors: np.ndarray,
    seen: list[np.ndarray | None],
    item_ids: np.ndarray,
    item_factors: np.ndarray,
    n: int,
) -> pd.DataFrame:
    """Top-``n`` unseen items for a block of users: one matmul, then :func:`top_n_scored`."""
    return top_n_scored(user_ids, user_factors @ item_factors.T, seen, item_ids, n)


def positions_in(item_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions in the sorted ``item_ids`` of those ``ids`` it holds (the others are left out)."""
    ids = np.asarray(ids)
    pos = np.searchsorted(item_ids, ids)
    inside = pos < len(item_ids)
    pos, ids = pos[inside], ids[inside]
    return pos[item_ids[pos] == ids]


def top_n_scored(
    user_ids: np.ndarray, scores: np.ndarray, seen: list[np.ndarray | None], item_ids: np.ndarray, n: int
) -> pd.DataFrame:
    """Top-``n`` unseen items of a block's users × items ``scores`` (overwritten): mask seen, argpartition, sort
    the ``n``. ``item_ids`` must be sorted ascending (seen items are located with ``searchsorted``)."""
    n_items = item_ids.shape[0]
    for row, s in enumerate(seen):
        if s is not None and len(s):
            scores[row, positions_in(item_ids, s)] = -np.inf
    k = min(n, n_items)
    if k == 0:
        return pd.DataFrame({USER_IDX: [], ITEM_IDX: [], SCORE: [], RANK: []})
    top, top_scores = top_k_sorted(scores, k)
    ranks = np.tile(np.arange(1, k + 1, dtype=np.int32), (len(scores), 1))
    keep = np.isfinite(top_scores)
    return pd.DataFrame(
        {
            USER_IDX: np.repeat(user_ids.astype(np.int32), k)[keep.ravel()],
            ITEM_IDX: item_ids[top].astype(np.int32)[keep],
            SCORE: top_scores[keep].astype(np.float32),
            RANK: ranks[keep],
        }
    )


def top_k_sorted(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` (1 ≤ k ≤ columns) best columns and their scores: argpartition, then sorted by score
    descending, ties to the smaller column."""
    if k < scores.shape[1]:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        top = np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.lexsort((top, -top_scores), axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)


def users_and_seen(users: DataFrame, seen: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The distinct ``user_idx`` of ``users``, and each user's seen items as ``(user_idx, _seen array<long>)``:
    the inputs of blocked top-N scoring (ALS here, EASE in :mod:`reelrank.ease`)."""
    wanted = users.select(F.col(USER_IDX).cast("int").alias(USER_IDX)).distinct()
    seen_lists = seen.groupBy(F.col(USER_IDX).cast("int").alias(USER_IDX)).agg(
        F.collect_list(F.col(ITEM_IDX).cast("long")).alias(SEEN)
    )
    return wanted, seen_lists


def recommend_top_n(model: FactorModel, users: DataFrame, seen: DataFrame, n: int) -> DataFrame:
    """Top-``n`` unseen items for every user in ``users`` with factors: ``(user_idx, item_idx, score, rank)``.

    Users are scored in blocks: item factors go out once as a broadcast numpy matrix, each Arrow batch of users
    is split into blocks of ``block_users``, scored with one matmul, seen items masked and the top ``n`` picked
    with ``argpartition`` (no users x items cross join). Users without factors get no list (the ALS candidate
    source gives them the popular list: :meth:`reelrank.candidates.CandidateSource.recommend`).
    """
    spark = users.sparkSession
    user_f, item_f = factor_frames(model)
    item_factors_pdf: pd.DataFrame = item_f.toPandas()
    item_pdf = item_factors_pdf.sort_values(ITEM_IDX)
    item_ids = item_pdf[ITEM_IDX].to_numpy(np.int64)
    item_mat = (
        np.stack(item_pdf[FEATURES].to_numpy()).astype(np.float32) if len(item_pdf) else np.zeros((0, 1), np.float32)
    )
    bc = spark.sparkContext.broadcast((item_ids, item_mat))
    block = model.block_users

    wanted, seen_lists = users_and_seen(users, seen)
    warm = wanted.join(user_f, USER_IDX).join(seen_lists, USER_IDX, "left")

    def score(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ids, mat = bc.value
        for pdf in batches:
            for start in range(0, len(pdf), block):
                part = pdf.iloc[start : start + block]
                uf = np.stack(part[FEATURES].to_numpy()).astype(np.float32)
                seen_b = [np.asarray(s, dtype=np.int64) if s is not None else None for s in part[SEEN]]
                yield top_n_block(part[USER_IDX].to_numpy(), uf, seen_b, ids, mat, n)

    return warm.mapInPandas(score, RECS_SCHEMA)


def recommend_all_users_spark(model: FactorModel, seen: DataFrame, n: int, block_size: int = 4096) -> DataFrame:
    """Reference top-N: Spark's ``recommendForAllUsers(n + max seen)`` then anti-join seen (for benchmarks/tests)."""
    agg_row = seen.groupBy(USER_IDX).count().agg(F.max("count")).first()
    assert agg_row is not None  # a global aggregate returns exactly one row
    max_seen = agg_row[0] or 0
    als = model.als.copy()
    als.setBlockSize(block_size)
    recs = als.recommendForAllUsers(n + int(max_seen))
    w = Window.partitionBy(USER_IDX).orderBy(F.col(SCORE).desc(), F.col(ITEM_IDX).asc())
    return (
        recs.select(F.col(USER_IDX), F.explode("recommendations").alias("r"))
        .select(USER_IDX, F.col(f"r.{ITEM_IDX}").alias(ITEM_IDX), F.col("r.rating").alias(SCORE))
        .join(seen.select(USER_IDX, ITEM_IDX), [USER_IDX, ITEM_IDX], "left_anti")
        .withColumn(RANK, F.row_number().over(w))
        .where(F.col(RANK) <= n)
    )
