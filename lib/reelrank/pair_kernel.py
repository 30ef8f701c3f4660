"""The Pearson (or binary cosine) kernel of :mod:`reelrank.neighbours`, pure numpy/scipy: the six sufficient
statistics of every entity pair between two blocks from three sparse products, each entity's local top-k kept as
chunks go. Spark runs it once per block pair; ``bench/`` times it alone as the one-process floor."""

from __future__ import annotations

import typing

import numpy as np
import pandas as pd
import scipy.sparse as sp

Measure = typing.Literal["pearson", "cosine"]

ENTITY = "entity_idx"
NEIGHBOUR = "neighbour_idx"
SIMILARITY = "similarity"
SUPPORT = "support"

_VARIANCE_RTOL = 64 * np.finfo(np.float64).eps
"""A side's ``n Σx² - (Σx)²`` at or below this fraction of ``n Σx²`` is zero variance (rounding, not signal)."""

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
    measure: Measure = "pearson",
) -> pd.DataFrame:
    """Pearson similarity of every entity pair with ``support >= min_support``, both directions.

    ``measure="cosine"``: the cosine of the binary vectors instead, support / √(count_a · count_b) with each
    entity's count among the given ratings (for implicit feedback, where ratings carry no signal).

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
    counts = np.diff(X.indptr).astype(np.float64) if measure == "cosine" else None
    pairs = _Pairs(min_support, shrinkage, local_k, rank_shrinkage, ents, counts)
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

    def __init__(self, min_support: int, shrinkage: float, local_k: int | None, rank_shrinkage: float,
                 ents: np.ndarray | None = None, counts: np.ndarray | None = None) -> None:
        self.min_support, self.shrinkage = max(min_support, 1), shrinkage
        self.local_k, self.rank_shrinkage = local_k, rank_shrinkage
        self.ents, self.counts = ents, counts
        """With ``counts`` (each of the sorted ``ents``' ratings), binary cosine instead of Pearson."""
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
        if self.counts is not None and self.ents is not None:  # binary cosine: co-count / √(count_a · count_b)
            ca = self.counts[np.searchsorted(self.ents, ea[rows])]
            cb = self.counts[np.searchsorted(self.ents, eb[cols])]
            sim = n / np.sqrt(ca * cb)
            if self.shrinkage > 0:
                sim = sim * n / (n + self.shrinkage)
            return rows, cols, sim, n
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
