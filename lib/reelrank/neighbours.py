"""Pearson neighbours, user-user and item-item, with KNNWithMeans-style predictions and item-based top-N.

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reelrank import columns as C
from reelrank.config import NeighboursConfig
from reelrank.factorize import top_k_sorted

log = logging.getLogger(__name__)

ENTITY = "entity_idx"
NEIGHBOUR = "neighbour_idx"
SIMILARITY = "similarity"
SUPPORT = "support"
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

_VARIANCE_RTOL = 64 * np.finfo(np.float64).eps
"""A side's ``n Σx² - (Σx)²`` at or below this fraction of ``n Σx²`` is zero variance (rounding, not signal)."""

_BY = {"user": (C.USER_IDX, C.ITEM_IDX), "item": (C.ITEM_IDX, C.USER_IDX)}


def _roles(by: str) -> tuple[str, str]:
    """(entity column, other column) for ``by``: user-user pairs are users co-rating items, and vice versa."""
    if by not in _BY:
        raise ValueError(f"by must be 'user' or 'item', got {by!r}")
    return _BY[by]


def _require(df: DataFrame, cols: list[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(missing)} (has {', '.join(df.columns)})")


# ---------------------------------------------------------------------------------------------------------------
# The kernel: sufficient statistics of every pair between two blocks, pure numpy/scipy (also the bench's floor).
# ---------------------------------------------------------------------------------------------------------------


def pair_similarities(
    entity: np.ndarray,
    other: np.ndarray,
    rating: np.ndarray,
    in_a: np.ndarray | None = None,
    min_support: int = 1,
    shrinkage: float = 0.0,
    local_k: int | None = None,
    rank_shrinkage: float = 0.0,
    max_pairs: int = 0,
) -> pd.DataFrame:
    """Pearson similarity of every entity pair with ``support >= min_support``, both directions.

    ``in_a`` marks the ratings of block A (the rest are block B); then only A×B pairs are computed. Without it,
    all pairs among the given entities are. With ``local_k`` only each entity's best ``local_k`` neighbours
    (by ``similarity * n / (n + rank_shrinkage)`` desc, neighbour asc) among these pairs are returned.
    ``max_pairs`` > 0 bounds the memory: the products are taken over chunks of A's entities so that no chunk
    holds more than this many candidate pairs (at least one entity per chunk; issue 15: one 25,000 × 25,000
    block took 9 GB).
    """
    if len(entity) == 0:
        return _empty_pairs()
    rating = np.asarray(rating, dtype=np.float64)
    # Pearson is shift-invariant; shifting so every value is >= 1 keeps every stored entry nonzero, so the three
    # products below share one sparsity pattern. Ratings on a 1.. scale are not changed at all (shift 0).
    x = rating - (rating.min() - 1.0)
    ents, e_inv = np.unique(entity, return_inverse=True)
    _, o_inv = np.unique(other, return_inverse=True)
    n_o = int(o_inv.max()) + 1
    X = sp.csc_matrix((x, (o_inv, e_inv)), shape=(n_o, len(ents)))
    X.sum_duplicates()
    pairs = _Pairs(min_support, shrinkage, local_k, rank_shrinkage)
    if in_a is None:
        a_cols = b_cols = np.arange(len(ents))
    else:
        a_cols = np.unique(e_inv[np.asarray(in_a, dtype=bool)])
        b_cols = np.setdiff1d(np.arange(len(ents)), a_cols, assume_unique=True)
        if len(a_cols) == 0 or len(b_cols) == 0:
            return _empty_pairs()
    if max_pairs <= 0 or len(a_cols) * len(b_cols) <= max_pairs:
        if in_a is None:  # the square product already holds both directions
            return pairs.of(_stats_square(X), ents, ents, both=False, drop_self=True)
        return pairs.of(_stats_rect(X[:, a_cols], _rhs(X[:, b_cols])), ents[a_cols], ents[b_cols], both=True)
    # chunks of A against all of B. Square: each chunk against every entity, one direction (the other comes
    # with the neighbour's own chunk), the same work as the square product; rectangular: both directions.
    rhs, eb, step = _rhs(X[:, b_cols]), ents[b_cols], max(1, max_pairs // len(b_cols))
    for s in range(0, len(a_cols), step):
        ac = a_cols[s:s + step]
        pairs.add(_stats_rect(X[:, ac], rhs), ents[ac], eb, both=in_a is not None, drop_self=in_a is None)
    return pairs.result()


class _Pairs:
    """Similarities from sufficient statistics, chunk by chunk, keeping each entity's local top-k as it goes."""

    def __init__(self, min_support: int, shrinkage: float, local_k: int | None, rank_shrinkage: float) -> None:
        self.min_support, self.shrinkage = max(min_support, 1), shrinkage
        self.local_k, self.rank_shrinkage = local_k, rank_shrinkage
        self.parts: list[pd.DataFrame] = []
        self.merged = 0

    def of(self, stats: tuple[np.ndarray, ...], ea: np.ndarray, eb: np.ndarray, both: bool,
           drop_self: bool = False) -> pd.DataFrame:
        """The pairs (ea[row], eb[col]) of one product's statistics; with ``both`` also (eb[col], ea[row])."""
        rows, cols, sim, n = self._similar(stats, ea, eb, drop_self)
        e, nb, s, sup = ea[rows], eb[cols], sim, n
        if both:
            e, nb = np.concatenate([e, eb[cols]]), np.concatenate([nb, ea[rows]])
            s, sup = np.concatenate([sim, sim]), np.concatenate([n, n])
        out = _frame(e, nb, s, sup)
        return local_top_k(out, self.local_k, self.rank_shrinkage) if self.local_k else out

    def add(self, stats: tuple[np.ndarray, ...], ea: np.ndarray, eb: np.ndarray, both: bool,
            drop_self: bool) -> None:
        """One chunk's pairs; with ``local_k`` only each entity's best, chosen on a dense key matrix (the chunk
        holds at most ``max_pairs`` cells), which costs a partition per row instead of a sort of every pair."""
        if not self.local_k:
            self.parts.append(self.of(stats, ea, eb, both, drop_self))
            return
        rows, cols, sim, n = self._similar(stats, ea, eb, drop_self)
        key = _rank_key(sim, n, self.rank_shrinkage)
        at = np.full((len(ea), len(eb)), -1, dtype=np.int64)
        at[rows, cols] = np.arange(len(rows))
        dense = np.full(at.shape, -np.inf)
        dense[rows, cols] = key
        best = _best_per_row(at, dense, self.local_k)
        self.parts.append(_frame(ea[rows[best]], eb[cols[best]], sim[best], n[best]))
        if both:
            best = _best_per_row(at.T, dense.T, self.local_k)
            self.parts.append(_frame(eb[cols[best]], ea[rows[best]], sim[best], n[best]))
        # B's entities collect a top-k from every chunk: fold them together once they double the kept rows
        if sum(len(p) for p in self.parts) > 2 * self.merged + (len(ea) + len(eb)) * self.local_k:
            self.parts = [self.result()]
            self.merged = len(self.parts[0])

    def result(self) -> pd.DataFrame:
        if not self.parts:
            return _empty_pairs()
        out = pd.concat(self.parts, ignore_index=True) if len(self.parts) > 1 else self.parts[0]
        return local_top_k(out, self.local_k, self.rank_shrinkage) if self.local_k else out

    def _similar(self, stats: tuple[np.ndarray, ...], ea: np.ndarray, eb: np.ndarray,
                 drop_self: bool) -> tuple[np.ndarray, ...]:
        """(row, col, similarity, support) of the pairs that pass ``min_support`` and have variance."""
        sxy, sx, sy, sxx, syy, n, rows, cols = stats
        keep = n >= self.min_support
        if drop_self:
            keep &= ea[rows] != eb[cols]
        sxy, sx, sy, sxx, syy, n, rows, cols = (v[keep] for v in (sxy, sx, sy, sxx, syy, n, rows, cols))
        # surprise's exact expression, term for term, so integer ratings give bit-identical similarities
        num = n * sxy - sx * sy
        vx = n * sxx - sx**2
        vy = n * syy - sy**2
        ok = (vx > _VARIANCE_RTOL * n * sxx) & (vy > _VARIANCE_RTOL * n * syy)
        sim = num[ok] / np.sqrt(vx[ok] * vy[ok])
        n = n[ok]
        if self.shrinkage > 0:
            sim = sim * n / (n + self.shrinkage)
        return rows[ok], cols[ok], sim, n


def _best_per_row(at: np.ndarray, dense: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's best ``k`` pairs by key desc then column asc: the order of :func:`local_top_k` when
    the columns ascend with the neighbour ids. ``dense`` holds each pair's key at its (row, col) cell and -inf
    elsewhere, ``at`` the pair's index and -1 elsewhere; the other direction passes both transposed."""
    shape = at.shape
    if shape[1] > k:  # cells below each row's k-th largest key cannot be kept
        kth = np.partition(dense, shape[1] - k, axis=1)[:, shape[1] - k]
        r, c = np.nonzero(dense >= np.maximum(kth, np.finfo(np.float64).min)[:, None])
    else:
        r, c = np.nonzero(dense > -np.inf)
    o = np.argsort(-dense[r, c], kind="stable")  # nonzero's order is column-ascending within a row
    o = o[np.argsort(r[o], kind="stable")]
    r, c = r[o], c[o]
    keep = np.arange(len(r)) - np.searchsorted(r, r) < k
    return at[r[keep], c[keep]]


def _frame(e: np.ndarray, nb: np.ndarray, sim: np.ndarray, n: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {ENTITY: e.astype(np.int32), NEIGHBOUR: nb.astype(np.int32), SIMILARITY: sim, SUPPORT: n.astype(np.int32)}
    )


def _rhs(B: sp.csc_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """The right-hand factors of :func:`_stats_rect`, B, its pattern Mb and B² + iMb, as CSR once per block."""
    return B.tocsr(), _with_data(B, 1.0).tocsr(), _with_data(B, B.data**2 + 1j).tocsr()


def _stats_rect(A: sp.csc_matrix, rhs: tuple[sp.csr_matrix, ...]) -> tuple[np.ndarray, ...]:
    """Σxy, Σx, Σy, Σx², Σy², n over the common rows of every column pair (i of A, j of B), as aligned arrays.

    Three complex products carry the six statistics: (A + iMa)ᵀB = Σxy + iΣy, (A² + iA)ᵀMb = Σx² + iΣx,
    Maᵀ(B² + iMb) = Σy² + i·n, where M is the 0/1 pattern. All three share the pattern of MaᵀMb.
    """
    B, Mb, B2 = rhs
    p1 = _with_data(A, A.data + 1j).T @ B
    p2 = _with_data(A, A.data**2 + 1j * A.data).T @ Mb
    p3 = _with_data(A, 1.0).T @ B2
    # no sort_indices (a third of a task's time): scipy orders each product row by the operands' patterns alone,
    # which the three share, and no entry cancels to zero (every real part is a sum of positives: the ratings
    # were shifted to >= 1 in pair_similarities)
    _same_pattern(p1, p2, p3)
    rows = np.repeat(np.arange(p1.shape[0]), np.diff(p1.indptr))
    return (p1.data.real, p2.data.imag, p1.data.imag, p2.data.real, p3.data.real, p3.data.imag, rows, p1.indices)


def _stats_square(X: sp.csc_matrix) -> tuple[np.ndarray, ...]:
    """Like :func:`_stats_rect` for all pairs within one block: two products, the other two statistics are the
    transposes (Σx[i,j] = Σy[j,i], Σx²[i,j] = Σy²[j,i])."""
    M = _with_data(X, 1.0)
    p1 = _with_data(X, X.data + 1j).T.tocsr() @ X  # Σxy + iΣy
    p2 = _with_data(X, X.data**2 + 1j).T.tocsr() @ M  # Σx² + i·n
    for p in (p1, p2):
        p.sort_indices()
    t1, t2 = p1.T.tocsr(), p2.T.tocsr()  # tocsr of a transpose yields sorted indices
    t1.sort_indices()
    t2.sort_indices()
    _same_pattern(p1, p2, t1, t2)
    rows = np.repeat(np.arange(p1.shape[0]), np.diff(p1.indptr))
    return (p1.data.real, t1.data.imag, p1.data.imag, p2.data.real, t2.data.real, p2.data.imag, rows, p1.indices)


def _with_data(m: sp.csc_matrix, data: np.ndarray | float) -> sp.csc_matrix:
    d = np.full(m.nnz, data) if np.isscalar(data) else data
    return sp.csc_matrix((d, m.indices, m.indptr), shape=m.shape)


def _same_pattern(*ms: sp.csr_matrix) -> None:
    first = ms[0]
    for m in ms[1:]:
        if not (np.array_equal(first.indptr, m.indptr) and np.array_equal(first.indices, m.indices)):
            raise AssertionError("sparse products disagree on their sparsity pattern")


def _shrunk(shrinkage: float) -> Column:
    """``similarity * support / (support + shrinkage)`` as a Column; the similarity itself when shrinkage is 0."""
    sim = F.col(SIMILARITY)
    return sim * F.col(SUPPORT) / (F.col(SUPPORT) + F.lit(float(shrinkage))) if shrinkage > 0 else sim


def _rank_key(sim: np.ndarray, support: np.ndarray, rank_shrinkage: float) -> np.ndarray:
    return sim * support / (support + rank_shrinkage) if rank_shrinkage > 0 else sim


def local_top_k(pdf: pd.DataFrame, k: int, rank_shrinkage: float = 0.0) -> pd.DataFrame:
    """The best ``k`` rows per entity by (rank key desc, neighbour asc); see :func:`top_k`."""
    if pdf.empty:
        return pdf
    key = _rank_key(pdf[SIMILARITY].to_numpy(), pdf[SUPPORT].to_numpy().astype(np.float64), rank_shrinkage)
    order = np.lexsort((pdf[NEIGHBOUR].to_numpy(), -key, pdf[ENTITY].to_numpy()))
    s = pdf.iloc[order]
    ent = s[ENTITY].to_numpy()
    starts = np.r_[0, np.flatnonzero(ent[1:] != ent[:-1]) + 1]
    pos = np.arange(len(ent)) - np.repeat(starts, np.diff(np.r_[starts, len(ent)]))
    return s[pos < k].reset_index(drop=True)


def _empty_pairs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            ENTITY: np.array([], np.int32),
            NEIGHBOUR: np.array([], np.int32),
            SIMILARITY: np.array([], np.float64),
            SUPPORT: np.array([], np.int32),
        }
    )


# ---------------------------------------------------------------------------------------------------------------
# Spark: capping, blocking, similarities and top-k lists.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """Whether one neighbour computation counts its pairs on all ratings or on down-sampled ones, and why."""

    group: str
    """The co-rated side: ``user_idx`` for item-item pairs, ``item_idx`` for user-user."""
    work: int
    """Co-rating products on all ratings: Σ over the groups of (ratings)²."""
    budget: int
    cap: int
    """Ratings kept per group when over the budget: the configured cap, else the largest that fits the budget."""
    groups: int
    heavy: int
    """Groups with more than ``cap`` ratings (down-sampled when :attr:`sampled`)."""
    work_capped: int
    """Co-rating products with every group capped."""

    @property
    def sampled(self) -> bool:
        return self.work > self.budget and self.heavy > 0

    @property
    def capped_share(self) -> float:
        return self.heavy / self.groups if self.sampled and self.groups else 0.0

    def describe(self, pairs: str) -> str:
        if self.sampled:
            return (f"{pairs} Pearson on down-sampled ratings: co-rating work {self.work:,} > exact_work_budget "
                    f"{self.budget:,}, so {self.heavy:,} of {self.groups:,} {self.group} ({self.capped_share:.1%}) "
                    f"keep {self.cap:,} ratings (work {self.work_capped:,})")
        return f"{pairs} Pearson exact: co-rating work {self.work:,} ≤ exact_work_budget {self.budget:,}"


def budget_cap(sizes: np.ndarray, counts: np.ndarray, budget: int) -> int:
    """The largest cap c with Σ counts · min(sizes, c)² ≤ ``budget`` (at least 1): groups of ``sizes`` ratings,
    ``counts`` groups of each size. The work is monotone in c, so a bisection finds it."""
    sizes, counts = np.asarray(sizes, dtype=np.float64), np.asarray(counts, dtype=np.float64)

    def work(c: int) -> float:
        return float((counts * np.minimum(sizes, c) ** 2).sum())

    lo, hi = 1, max(int(sizes.max(initial=1)), 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if work(mid) <= budget else (lo, mid - 1)
    return lo


def plan_sampling(ratings: DataFrame, group_col: str, cap: int, budget: int) -> Sampling:
    """Count the co-rating work (one small aggregation: how many groups have each number of ratings) and decide
    whether to down-sample, and to how many ratings per group: ``cap`` when > 0, else the largest within budget."""
    hist = ratings.groupBy(group_col).count().groupBy("count").agg(F.count(F.lit(1)).alias("groups")).collect()
    sizes = np.array([r[0] for r in hist], dtype=np.int64)
    counts = np.array([r[1] for r in hist], dtype=np.int64)
    work = int((counts * sizes * sizes).sum())
    if cap <= 0:
        cap = budget_cap(sizes, counts, budget) if work > budget else int(sizes.max(initial=0))
    kept = np.minimum(sizes, cap)
    return Sampling(group_col, work, budget, cap, int(counts.sum()), int(counts[sizes > cap].sum()),
                    int((counts * kept * kept).sum()))


def cap_ratings(ratings: DataFrame, group_col: str, cap: int, seed: int) -> DataFrame:
    """Keep at most ``cap`` ratings per ``group_col`` value, a seeded pseudo-random choice; 0 keeps everything.

    The choice is by ``xxhash64(seed, user, item)``, so it does not depend on partitioning or on the run.
    """
    if cap <= 0:
        return ratings
    counts = ratings.groupBy(group_col).count()
    heavy = counts.where(F.col("count") > cap).agg(F.count(F.lit(1)), F.sum(F.col("count") - cap)).first()
    assert heavy is not None  # a global aggregate returns exactly one row
    n_heavy, dropped = heavy[0], heavy[1] or 0
    if n_heavy == 0:
        return ratings
    log.info("capping %d %s value(s) at %d ratings: %d ratings left out of the pairs", n_heavy, group_col, cap, dropped)
    w = Window.partitionBy(group_col).orderBy(F.xxhash64(F.lit(seed), C.USER_IDX, C.ITEM_IDX), C.USER_IDX, C.ITEM_IDX)
    return ratings.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= cap).drop("_rn")


def _capped(ratings: DataFrame, by: str, cfg: NeighboursConfig) -> tuple[DataFrame, Sampling]:
    """The ratings the pairs of ``by`` are counted on: all of them unless the work is over the budget."""
    _require(ratings, [C.USER_IDX, C.ITEM_IDX, C.RATING], "ratings")
    r = ratings.select(C.USER_IDX, C.ITEM_IDX, F.col(C.RATING).cast("double").alias(C.RATING))
    group, cap = (C.USER_IDX, cfg.max_ratings_per_user) if by == "item" else (C.ITEM_IDX, cfg.max_ratings_per_item)
    plan = plan_sampling(r, group, cap, cfg.exact_work_budget)
    log.info(plan.describe(f"{by}-{by}"))
    return (cap_ratings(r, group, plan.cap, cfg.seed) if plan.sampled else r), plan


def _blocked_pairs(
    ratings: DataFrame, by: str, cfg: NeighboursConfig, local_k: int | None, rank_shrinkage: float = 0.0
) -> tuple[DataFrame, Sampling]:
    """Run :func:`pair_similarities` on every block pair; each rating travels to the B tasks of its block."""
    ent_col, oth_col = _roles(by)
    nb = max(cfg.blocks, 1)
    capped, plan = _capped(ratings, by, cfg)
    r = capped.select(
        F.col(ent_col).alias("_e"), F.col(oth_col).alias("_o"), F.col(C.RATING).alias("_r")
    )
    blk = F.pmod(F.col("_e"), F.lit(nb))
    other = F.explode(F.sequence(F.lit(0), F.lit(nb - 1)))
    keyed = r.select("*", blk.alias("_b"), other.alias("_t")).select(
        "_e", "_o", "_r", (F.least("_b", "_t") * nb + F.greatest("_b", "_t")).alias("_key")
    )
    min_support, shrinkage, max_pairs = cfg.min_support, cfg.shrinkage, cfg.max_pairs_per_chunk

    def task(pdf: pd.DataFrame) -> pd.DataFrame:
        key = int(pdf["_key"].iat[0])
        a, b = divmod(key, nb)
        e = pdf["_e"].to_numpy()
        in_a = None if a == b else (e % nb == a)
        o, r = pdf["_o"].to_numpy(), pdf["_r"].to_numpy()
        return pair_similarities(e, o, r, in_a, min_support, shrinkage, local_k, rank_shrinkage, max_pairs)

    return keyed.groupBy("_key").applyInPandas(task, SIM_SCHEMA), plan


def similarities(ratings: DataFrame, by: str, cfg: NeighboursConfig) -> DataFrame:
    """Every pair with ``support >= min_support`` and nonzero variance on both sides, both directions.

    Columns ``entity_idx, neighbour_idx, similarity, support``; ``by`` is ``"user"`` or ``"item"``.
    The full list can be large (quadratic in the entities that co-occur): prefer :func:`neighbour_lists`.
    """
    _roles(by)
    return _blocked_pairs(ratings, by, cfg, local_k=None)[0]


def top_k(sims: DataFrame, k: int, rank_shrinkage: float = 0.0) -> DataFrame:
    """Each entity's ``k`` most similar neighbours with ``rank`` 1..k (similarity desc, ties by neighbour_idx).

    With ``rank_shrinkage`` λ > 0 the order is by ``similarity * support / (support + λ)`` instead (significance
    weighting, ``cfg.list_shrinkage``); the similarity column is left as it is.
    """
    _require(sims, [ENTITY, NEIGHBOUR, SIMILARITY, SUPPORT], "similarities")
    w = Window.partitionBy(ENTITY).orderBy(_shrunk(rank_shrinkage).desc(), F.col(NEIGHBOUR).asc())
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


# ---------------------------------------------------------------------------------------------------------------
# Predictions (KNNWithMeans) and item-based top-N recommendations.
# ---------------------------------------------------------------------------------------------------------------


def predict(
    train: DataFrame,
    pairs: DataFrame,
    by: str,
    cfg: NeighboursConfig,
    mode: str = "topk",
    neighbours: DataFrame | None = None,
    rating_range: tuple[float, float] | None = None,
) -> DataFrame:
    """``pairs`` with ``prediction`` and ``fallback`` added, as scikit-surprise's KNNWithMeans predicts.

    r̂ = mean_x + Σ sim·(r − mean_nb) / Σ sim over the ``cfg.k`` most similar neighbours (ties by index) that
    rated the target, keeping only sim > 0; x is the user (``by="user"``) or the item. ``mode="exact"`` looks
    among all similarities (``neighbours``: a :func:`similarities` frame, computed when None); ``mode="topk"``
    only among each entity's stored list (``neighbours``: a :func:`top_k` frame, :func:`neighbour_lists` when
    None). ``fallback`` is true when fewer than ``max(cfg.min_k, 1)`` neighbours were usable (the entity mean is
    returned) or the user or item is not in ``train`` (the global mean, as surprise). Predictions are clipped
    to ``rating_range``, by default the range of the training ratings.
    """
    x_col, y_col = _roles(by)
    _require(pairs, [C.USER_IDX, C.ITEM_IDX], "pairs")
    _require(train, [C.USER_IDX, C.ITEM_IDX, C.RATING], "train")
    if mode not in ("exact", "topk"):
        raise ValueError(f"mode must be 'exact' or 'topk', got {mode!r}")
    if neighbours is None:
        neighbours = similarities(train, by, cfg) if mode == "exact" else neighbour_lists(train, by, cfg)
    tr = train.select(C.USER_IDX, C.ITEM_IDX, F.col(C.RATING).cast("double").alias(C.RATING))
    if rating_range is None:
        row = tr.agg(F.min(C.RATING), F.max(C.RATING), F.avg(C.RATING)).first()
        assert row is not None  # a global aggregate returns exactly one row
        lo, hi, global_mean = float(row[0]), float(row[1]), float(row[2])
    else:
        lo, hi = rating_range
        row = tr.agg(F.avg(C.RATING)).first()
        assert row is not None  # a global aggregate returns exactly one row
        global_mean = float(row[0])

    x_means = tr.groupBy(x_col).agg(F.avg(C.RATING).alias("_mean_x"))
    y_known = tr.select(F.col(y_col)).distinct().withColumn("_y_known", F.lit(True))
    todo = pairs.select(C.USER_IDX, C.ITEM_IDX).distinct()
    # the neighbours' ratings of the target, centred on each neighbour's mean: train rows (nb, y, r - mean_nb)
    rated = tr.join(F.broadcast(x_means), x_col).select(
        F.col(x_col).alias("_nb"), F.col(y_col), (F.col(C.RATING) - F.col("_mean_x")).alias("_dev")
    )
    sims = neighbours.where(F.col(SIMILARITY) > 0).select(
        F.col(ENTITY).alias(x_col), F.col(NEIGHBOUR).alias("_nb"), F.col(SIMILARITY).alias("_sim")
    )
    # Exact mode broadcasts its full similarity table: it is the verification path, for data whose pair list fits
    # in memory. Top-k lists are broadcast when Spark finds them small enough.
    if mode == "exact":
        sims = F.broadcast(sims)
    cand = todo.join(rated, y_col).join(sims, [x_col, "_nb"])
    # the k largest similarities per target (ties: smaller neighbour index first, as surprise's rating order),
    # picked by sorting each group's small candidate list rather than a global sort of all candidates
    cands = F.collect_list(F.struct(-F.col("_sim"), F.col("_nb"), F.col("_sim"), F.col("_dev")))
    best = F.slice(F.sort_array(cands), 1, cfg.k)
    agg = (
        cand.groupBy(y_col, x_col)
        .agg(best.alias("_top"))
        .select(
            y_col,
            x_col,
            F.aggregate("_top", F.lit(0.0), lambda acc, t: acc + t["_sim"] * t["_dev"]).alias("_num"),
            F.aggregate("_top", F.lit(0.0), lambda acc, t: acc + t["_sim"]).alias("_den"),
            F.size("_top").alias("_k"),
        )
    )
    k_needed = max(cfg.min_k, 1)
    used = F.coalesce(F.col("_k"), F.lit(0)) >= k_needed
    known = F.col("_mean_x").isNotNull() & F.col("_y_known").isNotNull()
    est = F.when(~known, F.lit(global_mean)).when(used, F.col("_mean_x") + F.col("_num") / F.col("_den"))
    est = est.otherwise(F.col("_mean_x"))
    # per-entity tables are O(entities): broadcast, like the id indexes in reelrank.matrix
    preds = (
        todo.join(F.broadcast(x_means), x_col, "left")
        .join(F.broadcast(y_known), y_col, "left")
        .join(agg, [C.USER_IDX, C.ITEM_IDX], "left")
        .select(
            C.USER_IDX,
            C.ITEM_IDX,
            _clip(est, lo, hi).alias(C.PREDICTION),
            (~(known & used)).alias(FALLBACK),
        )
    )
    return pairs.join(preds, [C.USER_IDX, C.ITEM_IDX], "left")


def _clip(c: Column, lo: float, hi: float) -> Column:
    return F.least(F.greatest(c, F.lit(lo)), F.lit(hi))


def fallback_rate(predictions: DataFrame) -> float:
    """Share of predictions that fell back to a mean (the evaluate stage logs it next to the RMSE)."""
    row = predictions.agg(F.avg(F.col(FALLBACK).cast("double"))).first()
    assert row is not None  # a global aggregate returns exactly one row
    return float(row[0] or 0.0)


def recommend(train: DataFrame, item_neighbours: DataFrame, n: int, shrinkage: float = 0.0,
              block_users: int = 1024) -> DataFrame:
    """Top ``n`` unseen items per user from the item-item lists, as ``user_idx, item_idx, score, rank``.

    Score of candidate i for user u: Σ sim(j, i) · n_ji / (n_ji + shrinkage) over the items j that u rated and
    whose stored list holds i with sim > 0 (the item-based top-N of Deshpande & Karypis, 2004): it rewards items
    close to many of the user's items. Raw Pearson is ±1 on two co-ratings, so without shrinkage obscure items
    win (ml-100k stratified NDCG@10 0.004; 0.31 with shrinkage 100). Ties go to the smaller item_idx. Items the
    user already rated are removed.

    The lists (top-k per item) go to every task as one sparse matrix and each block of ``block_users`` users is one
    sparse product; joining every rating with its item's list and grouping by (user, item) shuffled ~k rows per
    rating (30 M at 1M ratings; issue 15).
    """
    _require(train, [C.USER_IDX, C.ITEM_IDX], "train")
    _require(item_neighbours, [ENTITY, NEIGHBOUR, SIMILARITY, SUPPORT], "item_neighbours")
    edges: pd.DataFrame = item_neighbours.where(F.col(SIMILARITY) > 0).select(
        F.col(ENTITY).cast("int"), F.col(NEIGHBOUR).cast("int"), _shrunk(shrinkage).cast("double").alias("_sim")
    ).toPandas()
    size = int(max(edges[ENTITY].max(), edges[NEIGHBOUR].max())) + 1 if len(edges) else 0
    sims = sp.csr_matrix((edges["_sim"].to_numpy(), (edges[ENTITY].to_numpy(), edges[NEIGHBOUR].to_numpy())),
                         shape=(size, size))
    shared = train.sparkSession.sparkContext.broadcast(sims)
    histories = train.groupBy(F.col(C.USER_IDX).cast("int").alias(C.USER_IDX)).agg(
        F.collect_set(F.col(C.ITEM_IDX).cast("int")).alias("_seen"))

    def score(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        s = shared.value
        for pdf in batches:
            for start in range(0, len(pdf), block_users):
                part = pdf.iloc[start:start + block_users]
                yield top_reachable(part[C.USER_IDX].to_numpy(np.int32), list(part["_seen"]), s, n)

    return histories.mapInPandas(score, ITEM_RECS_SCHEMA)


ITEM_RECS_SCHEMA = T.StructType([
    T.StructField(C.USER_IDX, T.IntegerType(), False), T.StructField(C.ITEM_IDX, T.IntegerType(), False),
    T.StructField(C.SCORE, T.DoubleType(), False), T.StructField(C.RANK, T.IntegerType(), False)])
"""What :func:`recommend` returns (scores are sums of doubles)."""


def top_reachable(users: np.ndarray, seen: list[np.ndarray], sims: sp.csr_matrix, n: int) -> pd.DataFrame:
    """One block of :func:`recommend`: positive scores only (items no rated item's list reaches are not listed)."""
    size = sims.shape[0]
    rows = np.repeat(np.arange(len(users)), [len(x) for x in seen])
    cols = np.concatenate([np.asarray(x, np.int64) for x in seen]) if len(seen) else np.zeros(0, np.int64)
    inside = cols < size
    x = sp.csr_matrix((np.ones(int(inside.sum())), (rows[inside], cols[inside])), shape=(len(users), size))
    scores = (x @ sims).toarray()
    scores[rows[inside], cols[inside]] = 0.0
    k = min(n, size)
    if k == 0:
        return pd.DataFrame({C.USER_IDX: [], C.ITEM_IDX: [], C.SCORE: [], C.RANK: []})
    top, top_scores = top_k_sorted(scores, k)  # columns are item indexes: ties go to the smaller item
    keep = top_scores > 0
    ranks = np.tile(np.arange(1, k + 1, dtype=np.int32), (len(users), 1))
    return pd.DataFrame({C.USER_IDX: np.repeat(users, k)[keep.ravel()], C.ITEM_IDX: top.astype(np.int32)[keep],
                         C.SCORE: top_scores[keep], C.RANK: ranks[keep]})
