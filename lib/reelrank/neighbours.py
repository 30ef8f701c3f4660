"""Pearson neighbours, user-user and item-item: similarities and each entity's top-k list.

Predictions from the lists (KNNWithMeans) and item-based top-N are :mod:`reelrank.knn`; the per-block numpy kernel
is :mod:`reelrank.pair_kernel`, the down-sampling plan :mod:`reelrank.neighbour_sampling`.

Similarity is scikit-surprise's ``pearson``: for a pair of entities, over the n others both rated,
``(n Σxy - Σx Σy) / sqrt((n Σx² - (Σx)²)(n Σy² - (Σy)²))``, optionally shrunk by ``n / (n + λ)``.
Pairs below ``min_support`` or with zero variance on either side get no row (never NaN).

How pairs are found at scale (chosen by measurement, see ``bench/neighbours.py`` and
``bench/results/neighbours.md``): entities are split into B blocks by ``idx mod B``; each block pair is one
``applyInPandas`` task that receives the ratings of its two blocks and computes the six sufficient statistics of
all its pairs with three complex-valued scipy sparse products (real and imaginary parts carry two statistics
each). Work is ∝ Σ over the other side of (ratings)², never n²; no pair is materialised before it has passed
``min_support``, and :func:`neighbour_lists` keeps only each task's local top-k per entity before the global
top-k, so the full pair list is never shuffled. Only when the co-rating work (Σ over the co-rated side of
ratings², counted first) exceeds ``exact_work_budget`` are heavy users (popular items for user-user) down-sampled,
seeded, before pairs are counted, as Mahout's ``maxPrefsPerUser`` does, to the configured cap or else to the
largest that brings the work within the budget, so the cost stays bounded as the catalogue grows; the lists then
say so in their ``sampled`` and ``capped_share`` columns (issue 15: a cap that applied on ml-100k changed 13,719
of 71,713 item-item similarities).
"""

from __future__ import annotations

import logging

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reelrank import columns as C
from reelrank.config import NeighboursConfig
from reelrank.neighbour_sampling import Sampling, cap_ratings, plan_sampling
from reelrank.pair_kernel import ENTITY, NEIGHBOUR, SIMILARITY, SUPPORT, Measure, pair_similarities

log = logging.getLogger(__name__)


FALLBACK = "fallback"
SAMPLED = "sampled"
"""Column of the neighbour lists: true when heavy users (items) were down-sampled before the pairs were counted."""
CAPPED_SHARE = "capped_share"
"""Column of the neighbour lists: the share of the co-rated side's users (items) that were down-sampled."""

SIM_SCHEMA = T.StructType(
    [
        T.StructField(ENTITY, T.IntegerType(), False),
        T.StructField(NEIGHBOUR, T.IntegerType(), False),
        T.StructField(SIMILARITY, T.DoubleType(), False),
        T.StructField(SUPPORT, T.IntegerType(), False),
    ]
)


_BY = {"user": (C.USER_IDX, C.ITEM_IDX), "item": (C.ITEM_IDX, C.USER_IDX)}


def roles(by: str) -> tuple[str, str]:
    """(entity column, other column) for ``by``: user-user pairs are users co-rating items, and vice versa."""
    if by not in _BY:
        raise ValueError(f"by must be 'user' or 'item', got {by!r}")
    return _BY[by]


def require_columns(df: DataFrame, cols: list[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(missing)} (has {', '.join(df.columns)})")


def shrunk(shrinkage: float) -> Column:
    """``similarity * support / (support + shrinkage)`` as a Column; the similarity itself when shrinkage is 0."""
    sim = F.col(SIMILARITY)
    return sim * F.col(SUPPORT) / (F.col(SUPPORT) + F.lit(float(shrinkage))) if shrinkage > 0 else sim


# ---------------------------------------------------------------------------------------------------------------
# Spark: capping, blocking, similarities and top-k lists.
# ---------------------------------------------------------------------------------------------------------------


def capped_ratings(ratings: DataFrame, by: str, cfg: NeighboursConfig) -> tuple[DataFrame, Sampling]:
    """The ratings the pairs of ``by`` are counted on: all of them unless the work is over the budget."""
    require_columns(ratings, [C.USER_IDX, C.ITEM_IDX, C.RATING], "ratings")
    r = ratings.select(C.USER_IDX, C.ITEM_IDX, F.col(C.RATING).cast("double").alias(C.RATING))
    group, cap = (C.USER_IDX, cfg.max_ratings_per_user) if by == "item" else (C.ITEM_IDX, cfg.max_ratings_per_item)
    plan = plan_sampling(r, group, cap, cfg.exact_work_budget)
    log.info(plan.describe(f"{by}-{by}"))
    return (cap_ratings(r, group, plan.cap, cfg.seed) if plan.sampled else r), plan


def _blocked_pairs(
    ratings: DataFrame, by: str, cfg: NeighboursConfig, local_k: int | None, rank_shrinkage: float = 0.0
) -> tuple[DataFrame, Sampling]:
    """Run :func:`pair_similarities` on every block pair; each rating travels to the B tasks of its block."""
    ent_col, oth_col = roles(by)
    nb = max(cfg.blocks, 1)
    capped, plan = capped_ratings(ratings, by, cfg)
    r = capped.select(
        F.col(ent_col).alias("_e"), F.col(oth_col).alias("_o"), F.col(C.RATING).alias("_r")
    )
    blk = F.pmod(F.col("_e"), F.lit(nb))
    other = F.explode(F.sequence(F.lit(0), F.lit(nb - 1)))
    keyed = r.select("*", blk.alias("_b"), other.alias("_t")).select(
        "_e", "_o", "_r", (F.least("_b", "_t") * nb + F.greatest("_b", "_t")).alias("_key")
    )
    min_support, shrinkage, max_pairs = cfg.min_support, cfg.shrinkage, cfg.max_pairs_per_chunk
    measure = similarity_measure(capped, by, cfg)

    def task(pdf: pd.DataFrame) -> pd.DataFrame:
        key = int(pdf["_key"].iat[0])
        a, b = divmod(key, nb)
        e = pdf["_e"].to_numpy()
        in_a = None if a == b else (e % nb == a)
        o, r = pdf["_o"].to_numpy(), pdf["_r"].to_numpy()
        return pair_similarities(e, o, r, in_a, min_support, shrinkage, local_k, rank_shrinkage, max_pairs,
                                 measure)

    return keyed.groupBy("_key").applyInPandas(task, SIM_SCHEMA), plan


def similarity_measure(ratings: DataFrame, by: str, cfg: NeighboursConfig) -> Measure:
    """``[neighbours] similarity``, with ``auto`` resolved: Pearson, unless every rating is the same (implicit
    feedback: plays, views, purchases), where Pearson has no variance to work with and would find no pair at all;
    then the cosine of the binary vectors, and the log says so (issue 30)."""
    if cfg.similarity != "auto":
        return cfg.similarity
    lo, hi = ratings.agg(F.min(C.RATING), F.max(C.RATING)).first() or (None, None)
    if lo is not None and lo == hi:
        log.info("%s-%s similarity is cosine on binary data: every rating is %g, so Pearson (which needs their "
                 "variance) is undefined ([neighbours] similarity = \"auto\")", by, by, lo)
        return "cosine"
    return "pearson"


def similarities(ratings: DataFrame, by: str, cfg: NeighboursConfig) -> DataFrame:
    """Every pair with ``support >= min_support`` and nonzero variance on both sides, both directions (with
    ``similarity_measure`` cosine: every pair with ``support >= min_support``).

    Columns ``entity_idx, neighbour_idx, similarity, support``; ``by`` is ``"user"`` or ``"item"``.
    The full list can be large (quadratic in the entities that co-occur): prefer :func:`neighbour_lists`.
    """
    roles(by)
    return _blocked_pairs(ratings, by, cfg, local_k=None)[0]


def top_k(sims: DataFrame, k: int, rank_shrinkage: float = 0.0) -> DataFrame:
    """Each entity's ``k`` most similar neighbours with ``rank`` 1..k (similarity desc, ties by neighbour_idx).

    With ``rank_shrinkage`` λ > 0 the order is by ``similarity * support / (support + λ)`` instead (significance
    weighting, ``cfg.list_shrinkage``); the similarity column is left as it is.
    """
    require_columns(sims, [ENTITY, NEIGHBOUR, SIMILARITY, SUPPORT], "similarities")
    w = Window.partitionBy(ENTITY).orderBy(shrunk(rank_shrinkage).desc(), F.col(NEIGHBOUR).asc())
    return (
        sims.withColumn(C.RANK, F.row_number().over(w))
        .where(F.col(C.RANK) <= k)
        .select(ENTITY, NEIGHBOUR, SIMILARITY, SUPPORT, C.RANK)
    )


def neighbour_lists(ratings: DataFrame, by: str, cfg: NeighboursConfig, k: int | None = None) -> DataFrame:
    """``top_k(similarities(ratings, by, cfg), k or cfg.top_k, cfg.list_shrinkage)`` without shuffling all pairs,
    with :data:`SAMPLED` and :data:`CAPPED_SHARE` (whether the ratings were down-sampled, see :class:`Sampling`).

    Each block-pair task keeps its local top-k per entity; the global top-k picks among at most B·k candidates
    per entity, with the same order, so the result equals the two-step version exactly.
    """
    k = k or cfg.top_k
    pairs, plan = _blocked_pairs(ratings, by, cfg, k, cfg.list_shrinkage)
    return top_k(pairs, k, cfg.list_shrinkage).select(
        "*", F.lit(plan.sampled).alias(SAMPLED), F.lit(plan.capped_share).alias(CAPPED_SHARE))
