"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): a closed-form item-item model.

With the binary user-item matrix X and G = XᵀX + λI, P = G⁻¹, the item-item weights are B = I − P·diag(1/diag(P))
(zero diagonal), and a user's scores are x_u·B. The inversion is items × items, so a catalogue larger than
``[candidates.ease] max_items`` is restricted to its most-interacted items (the other sources cover the rest, and
the night publishes: issue 30); the Gram matrix is built on the driver from the distinct pairs and
inverted through its Cholesky factor with torch (on the GPU when there is one). Scoring runs in Spark like ALS
top-N: B goes out once as a broadcast and each block of users is one sparse × dense product (:func:`top_n_ease`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from pyspark.sql import DataFrame

from reelrank.columns import ITEM_IDX, USER_IDX
from reelrank.device import choose_device
from reelrank.factorize import SEEN, positions_in, top_n_scored, users_and_seen
from reelrank.popularity import RECS_SCHEMA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EaseModel:
    item_ids: np.ndarray
    """Item indexes of B's rows and columns, ascending."""
    weights: np.ndarray
    """B, items × items float32 with a zero diagonal."""


GRAM_ROWS = 2048
"""Rows of XᵀX per sparse product in :func:`gram`: its transient sparse block stays ~2048 × items × 8 bytes
(float32)."""

EXACT_FLOAT32 = 2**24
"""Integers below this are exact in float32: a binary XᵀX has no entry above its number of users."""


def gram(x: sp.csr_matrix) -> np.ndarray:
    """XᵀX as a dense array of x's dtype, built a block of rows at a time: the whole sparse product of a 20,000-item
    catalogue holds up to 4·10⁸ entries (3.2 GB in float32) on top of the dense result (1.6 GB in float32)."""
    xt = x.T.tocsr()
    out = np.zeros((x.shape[1], x.shape[1]), dtype=x.dtype)
    for start in range(0, x.shape[1], GRAM_ROWS):
        (xt[start : start + GRAM_ROWS] @ x).toarray(out=out[start : start + GRAM_ROWS])
    return out


def ease_weights(x: sp.csr_matrix, lam: float, device: str = "auto") -> np.ndarray:
    """B = I − P·diag(1/diag(P)) with P = (XᵀX + λI)⁻¹, as float32. XᵀX + λI is symmetric positive definite, so P
    comes from its Cholesky factor: half the work of a general inverse."""
    p = torch.cholesky_inverse(_cholesky(x, lam, choose_device(device)))
    p.div_(-p.diagonal()[None, :])  # the negation is a new tensor
    p.fill_diagonal_(0.0)
    # cholesky_inverse returns column-major; scoring needs rows (a sparse x·B copies a non-C-ordered B every call)
    return np.ascontiguousarray(p.to(torch.float32).cpu().numpy())


def _cholesky(x: sp.csr_matrix, lam: float, device: torch.device) -> torch.Tensor:
    """The Cholesky factor of XᵀX + λI in float32: half the memory of float64 and about 3× faster at 5,000 items
    (1.3 against 4.4 s), with |ΔB| ≤ 2.2e-6 and the same top-10 lists there (issue 15). In float64 when float32
    finds the matrix not positive definite, or when XᵀX's counts would not be exact in float32."""
    dtypes = (np.float32, np.float64) if x.shape[0] < EXACT_FLOAT32 else (np.float64,)
    for dtype in dtypes:
        g = torch.from_numpy(gram(x.astype(dtype, copy=False))).to(device)
        g.diagonal().add_(lam)
        factor, info = torch.linalg.cholesky_ex(g)
        if not int(info):
            return factor
        del g, factor
        if dtype is np.float32:
            log.warning("EASE: XᵀX + λI is not positive definite in float32; factorising in float64, which needs "
                        "twice the memory (~16 × items² bytes)")
    raise ValueError(f"EASE: XᵀX + λI is not positive definite in float64 with λ = {lam:g}; raise "
                     "[candidates.ease] lam")


def fit_ease(interactions: DataFrame, lam: float, max_items: int, device: str = "auto") -> EaseModel:
    """Fit EASE on the distinct (user_idx, item_idx) pairs of ``interactions`` (implicit feedback), over at most
    ``max_items`` items: the most interacted (most users; ties to the smaller index) when the catalogue is larger."""
    pairs: pd.DataFrame = interactions.select(USER_IDX, ITEM_IDX).distinct().toPandas()
    item_ids, users_per_item = np.unique(pairs[ITEM_IDX].to_numpy(np.int64), return_counts=True)
    if len(item_ids) > max_items:
        kept = np.sort(item_ids[np.lexsort((item_ids, -users_per_item))[:max_items]])
        inside = np.isin(pairs[ITEM_IDX].to_numpy(np.int64), kept)
        log.info("EASE over the %s most-interacted of %s items ([candidates.ease] max_items; the inverse needs ~8 × "
                 "items² bytes): they hold %.1f%% of the (user, item) pairs, the other sources cover the rest",
                 f"{len(kept):,}", f"{len(item_ids):,}", 100.0 * inside.mean())
        pairs, item_ids = pairs[inside], kept
    users = pd.factorize(pairs[USER_IDX])[0]
    cols = np.searchsorted(item_ids, pairs[ITEM_IDX].to_numpy(np.int64))
    shape = (int(users.max(initial=-1)) + 1, len(item_ids))
    x = sp.csr_matrix((np.ones(len(pairs), np.float32), (users, cols)), shape=shape)
    weights = ease_weights(x, lam, device)
    log.info("EASE λ=%g: %d users, %d items", lam, x.shape[0], len(item_ids))
    return EaseModel(item_ids, weights)


def top_n_ease(user_ids: np.ndarray, seen: list[np.ndarray], item_ids: np.ndarray, weights: np.ndarray,
               n: int) -> pd.DataFrame:
    """Top-``n`` unseen items for a block of users by x_u·B, with x sparse: each user's score row is the sum of
    B's rows for their items (a user holds ~100 of 10,000 items, so a dense x·B is ~100× the work)."""
    rows, cols = [], []
    for row, s in enumerate(seen):
        pos = positions_in(item_ids, s)
        rows.append(np.full(len(pos), row, np.int64))
        cols.append(pos)
    r, c = (np.concatenate(rows), np.concatenate(cols)) if rows else (np.empty(0, np.int64),) * 2
    x = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(seen), len(item_ids)))
    x.data[:] = 1.0  # binary, even where an item repeats in a seen list
    return top_n_scored(user_ids, np.asarray(x @ weights), list(seen), item_ids, n)


def recommend_ease(model: EaseModel, users: DataFrame, seen: DataFrame, n: int, block_users: int) -> DataFrame:
    """Top-``n`` unseen items for every user in ``users`` with history in ``seen``, by x_u·B. Users without
    history, or none of whose items B holds, get no list here: the EASE candidate source gives them the popular
    list (:mod:`reelrank.candidates.ease`)."""
    spark = users.sparkSession
    bc = spark.sparkContext.broadcast((model.item_ids, model.weights))
    wanted, seen_lists = users_and_seen(users, seen)
    warm = wanted.join(seen_lists, USER_IDX)

    def score(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ids, b = bc.value
        for pdf in batches:
            for start in range(0, len(pdf), block_users):
                part = pdf.iloc[start : start + block_users]
                seen_b = [np.unique(np.asarray(s, dtype=np.int64)) for s in part[SEEN]]
                yield top_n_ease(part[USER_IDX].to_numpy(), seen_b, ids, b, n)

    return warm.mapInPandas(score, RECS_SCHEMA)
