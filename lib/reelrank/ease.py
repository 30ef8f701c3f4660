"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): a closed-form item-item model.

With the binary user-item matrix X and G = XᵀX + λI, P = G⁻¹, the item-item weights are B = I − P·diag(1/diag(P))
(zero diagonal), and a user's scores are x_u·B. The inversion is items × items, so the catalogue size is
guarded (``[candidates] ease_max_items``); the Gram matrix is built on the driver from the distinct pairs and
inverted with torch (on the GPU when there is one). Scoring runs in Spark like ALS top-N: B goes out once as a
broadcast and each block of users is one matmul (:func:`reelrank.factorize.top_n_block`).
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
from pyspark.sql import functions as F

from reelrank.columns import ITEM_IDX, USER_IDX
from reelrank.device import choose_device
from reelrank.factorize import SEEN, top_n_block, users_and_seen
from reelrank.popularity import RECS_SCHEMA, item_users, popular_unseen

log = logging.getLogger(__name__)


class CatalogueTooLarge(ValueError):
    """EASE would invert a matrix larger than the configured catalogue limit."""


@dataclass(frozen=True)
class EaseModel:
    item_ids: np.ndarray
    """Item indexes of B's rows and columns, ascending."""
    weights: np.ndarray
    """B, items × items float32 with a zero diagonal."""
    popularity: DataFrame
    """``(item_idx, score)`` of the fitted data, for users without history."""


def ease_weights(x: sp.csr_matrix, lam: float, device: str = "auto") -> np.ndarray:
    """B = I − P·diag(1/diag(P)) with P = (XᵀX + λI)⁻¹, in float64, returned as float32."""
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = torch.linalg.inv(torch.from_numpy(gram).to(choose_device(device))).cpu().numpy()
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def fit_ease(interactions: DataFrame, lam: float, max_items: int, device: str = "auto") -> EaseModel:
    """Fit EASE on the distinct (user_idx, item_idx) pairs of ``interactions`` (implicit feedback)."""
    pairs: pd.DataFrame = interactions.select(USER_IDX, ITEM_IDX).distinct().toPandas()
    item_ids = np.unique(pairs[ITEM_IDX].to_numpy(np.int64))
    if len(item_ids) > max_items:
        raise CatalogueTooLarge(
            f"EASE inverts an items × items matrix: {len(item_ids):,} items is more than candidates.ease_max_items "
            f"= {max_items:,}; raise it (memory ~ 16 × items² bytes) or drop 'ease' from candidates.sources"
        )
    users = pd.factorize(pairs[USER_IDX])[0]
    cols = np.searchsorted(item_ids, pairs[ITEM_IDX].to_numpy(np.int64))
    shape = (int(users.max(initial=-1)) + 1, len(item_ids))
    x = sp.csr_matrix((np.ones(len(pairs), np.float64), (users, cols)), shape=shape)
    weights = ease_weights(x, lam, device)
    log.info("EASE λ=%g: %d users, %d items", lam, x.shape[0], len(item_ids))
    return EaseModel(item_ids, weights, item_users(interactions).cache())


def recommend_ease(model: EaseModel, users: DataFrame, seen: DataFrame, n: int, block_users: int) -> DataFrame:
    """Top-``n`` unseen items for every user in ``users`` by x_u·B; users without history get the popular list."""
    spark = users.sparkSession
    bc = spark.sparkContext.broadcast((model.item_ids, model.weights))
    wanted, seen_lists = users_and_seen(users, seen)
    # a user none of whose items B holds (all new since the fit) is cold, not scored as zeros
    known = spark.createDataFrame(pd.DataFrame({ITEM_IDX: model.item_ids.astype(np.int64)}))
    held = seen.join(F.broadcast(known), ITEM_IDX, "left_semi").select(USER_IDX).distinct()
    warm = wanted.join(seen_lists, USER_IDX).join(held, USER_IDX, "left_semi")

    def score(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ids, b = bc.value
        for pdf in batches:
            for start in range(0, len(pdf), block_users):
                part = pdf.iloc[start : start + block_users]
                seen_b = [np.unique(np.asarray(s, dtype=np.int64)) for s in part[SEEN]]
                x = np.zeros((len(part), len(ids)), np.float32)
                for row, s in enumerate(seen_b):
                    pos = np.searchsorted(ids, s)
                    inside = pos < len(ids)
                    pos = pos[inside][ids[pos[inside]] == s[inside]]
                    x[row, pos] = 1.0
                # top_n_block scores x @ item_factors.T, so B's transpose plays the item factors
                yield top_n_block(part[USER_IDX].to_numpy(), x, list(seen_b), ids, b.T, n)

    cold = wanted.join(warm.select(USER_IDX), USER_IDX, "left_anti")
    return warm.mapInPandas(score, RECS_SCHEMA).unionByName(popular_unseen(model.popularity, cold, seen, n))
