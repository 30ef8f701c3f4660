"""EASE against independent references on MovieLens 100k: per-column ridge regressions and numpy top-N."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import scipy.sparse as sp
from conftest import dataset

from reelrank import columns as C
from reelrank import ease

pytestmark = pytest.mark.spark

LAM = 200.0


@pytest.fixture(scope="module")
def u1() -> pd.DataFrame:
    pdf = pd.read_csv(dataset("ml-100k") / "u1.base", sep="\t", names=["user", "item", "rating", "ts"])
    return pd.DataFrame({C.USER_IDX: pdf.user - 1, C.ITEM_IDX: pdf.item - 1, C.RATING: pdf.rating.astype(float),
                         C.TS: pdf.ts})


def _binary(pdf: pd.DataFrame) -> tuple[sp.csr_matrix, np.ndarray]:
    items = np.unique(pdf[C.ITEM_IDX])
    x = sp.csr_matrix((np.ones(len(pdf)), (pdf[C.USER_IDX], np.searchsorted(items, pdf[C.ITEM_IDX]))),
                      shape=(pdf[C.USER_IDX].max() + 1, len(items)))
    return x, items


def test_weights_solve_each_items_ridge_regression(u1):
    """Column j of B is the ridge regression of item j on every other item (Steck 2019, eq. 1 with diag(B) = 0),
    solved here item by item with scipy, independently of the closed form."""
    x, _ = _binary(u1)
    b = ease.ease_weights(x, LAM, device="cpu")
    assert np.all(np.diag(b) == 0)
    dense = x.toarray()
    rng = np.random.default_rng(0)
    for j in rng.choice(dense.shape[1], size=5, replace=False):
        others = np.delete(np.arange(dense.shape[1]), j)
        a = dense[:, others]
        ref = scipy.linalg.solve(a.T @ a + LAM * np.eye(len(others)), a.T @ dense[:, j], assume_a="pos")
        np.testing.assert_allclose(b[others, j], ref, rtol=1e-3, atol=1e-6)


def test_spark_top_n_equals_numpy(spark, u1):
    """The Spark scoring path lists, per user, the n best unseen items of x_u·B (ties to the smaller item)."""
    sample = u1[u1[C.USER_IDX] < 60]
    df = spark.createDataFrame(sample)
    model = ease.fit_ease(df, LAM, max_items=5000, device="cpu")
    users = spark.createDataFrame(pd.DataFrame({C.USER_IDX: [0, 5, 17, 59, 9999]}))
    got = ease.recommend_ease(model, users, df.select(C.USER_IDX, C.ITEM_IDX), 10, block_users=2).toPandas()
    x, items = _binary(sample)
    np.testing.assert_allclose(model.weights, ease.ease_weights(x, LAM, device="cpu"), rtol=1e-6)
    assert model.weights.flags.c_contiguous  # scipy's sparse x·B copies a column-major B for every block
    scores = x.toarray() @ model.weights.astype(np.float64)
    for user in (0, 5, 17, 59):
        s = np.where(x[user].toarray().ravel() > 0, -np.inf, scores[user])
        mine = got[got[C.USER_IDX] == user].sort_values(C.RANK)
        assert mine[C.RANK].tolist() == list(range(1, 11))
        # each listed score is that unseen item's x_u·B, and they are the ten best (robust to float32 near-ties)
        np.testing.assert_allclose(mine[C.SCORE], s[np.searchsorted(items, mine[C.ITEM_IDX])], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(mine[C.SCORE], np.sort(s)[::-1][:10], rtol=1e-4, atol=1e-5)
    assert 9999 not in set(got[C.USER_IDX])  # no history: no list here (the EASE source gives it the popular one)


def test_a_catalogue_over_the_limit_keeps_its_most_interacted_items(spark, u1, caplog):
    """Over ``max_items`` EASE is fitted on the most-interacted items only (ties to the smaller index), exactly as
    EASE on those items' columns, and says what share of the pairs they hold; the night goes on (issue 30)."""
    part = u1[u1[C.USER_IDX] < 30]
    pairs = part[[C.USER_IDX, C.ITEM_IDX]].drop_duplicates()
    users = pairs.groupby(C.ITEM_IDX)[C.USER_IDX].count()
    kept = np.sort(users.reset_index().sort_values([C.USER_IDX, C.ITEM_IDX], ascending=[False, True])
                   [C.ITEM_IDX].to_numpy()[:100])
    with caplog.at_level("INFO", logger="reelrank.ease"):
        model = ease.fit_ease(spark.createDataFrame(part), LAM, max_items=100, device="cpu")
    np.testing.assert_array_equal(model.item_ids, kept)
    inside = pairs[pairs[C.ITEM_IDX].isin(kept)]
    x = sp.csr_matrix((np.ones(len(inside)), (pd.factorize(inside[C.USER_IDX])[0],
                                              np.searchsorted(kept, inside[C.ITEM_IDX]))))
    g = (x.T @ x).toarray() + LAM * np.eye(len(kept))
    p = np.linalg.inv(g)
    np.testing.assert_allclose(model.weights, np.eye(len(kept)) - p / np.diag(p), atol=2e-5)
    share = 100.0 * len(inside) / len(pairs)
    assert f"EASE over the 100 most-interacted of {len(users):,} items" in caplog.text
    assert f"{share:.1f}% of the (user, item) pairs" in caplog.text


def test_float32_factorisation_falls_back_to_float64(caplog):
    """Two items every one of 1,000 users has, with a tiny λ: XᵀX + λI is positive definite, but its float32
    Cholesky fails (the second pivot, ~λ, is below float32 rounding), so B comes from float64: B₀₁ = n / (n + λ)."""
    n, lam = 1000, 1e-5
    x = sp.csr_matrix(np.ones((n, 2), np.float32))
    with caplog.at_level("WARNING", logger="reelrank.ease"):
        b = ease.ease_weights(x, lam, device="cpu")
    assert "factorising in float64" in caplog.text
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, [[0.0, n / (n + lam)], [n / (n + lam), 0.0]], rtol=1e-6)


def test_float64_when_counts_would_not_be_exact_in_float32(monkeypatch, u1):
    """Past 2²⁴ users a count could round in float32, so the whole factorisation runs in float64: on ml-100k it
    gives the float32 weights to 1e-5."""
    x, _ = _binary(u1)
    b32 = ease.ease_weights(x, LAM, device="cpu")
    monkeypatch.setattr(ease, "EXACT_FLOAT32", 0)
    b64 = ease.ease_weights(x, LAM, device="cpu")
    assert b64.dtype == np.float32
    np.testing.assert_allclose(b64, b32, atol=1e-5)
    assert np.abs(b64 - b32).max() > 0  # it did take the other path
