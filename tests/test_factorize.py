"""ALS wrapper logic: biases vs numpy, cold start without NaN, seen items removed, blocked top-N vs brute force."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from reelrank.factorize import (
    factor_frames,
    fit_als,
    fit_biases,
    predict_ratings,
    recommend_all_users_spark,
    recommend_top_n,
    top_n_block,
)
from reelrank.tune import run_tuning, tune_als

pytestmark = pytest.mark.spark

N_USERS, N_ITEMS = 40, 30


@pytest.fixture(scope="module")
def ratings_pdf() -> pd.DataFrame:
    """Low-rank ratings on 1..5 with a popularity skew; each user rates 6-15 items."""
    rng = np.random.default_rng(7)
    u, v = rng.normal(size=(N_USERS, 3)), rng.normal(size=(N_ITEMS, 3))
    p = np.linspace(2.0, 0.5, N_ITEMS)
    rows = []
    for user in range(N_USERS):
        for item in rng.choice(N_ITEMS, size=int(rng.integers(6, 16)), replace=False, p=p / p.sum()):
            rows.append((user, int(item), float(np.clip(np.rint(3 + u[user] @ v[item]), 1, 5)), 1000 + len(rows)))
    return pd.DataFrame(rows, columns=["user_idx", "item_idx", "rating", "ts"])


@pytest.fixture(scope="module")
def ratings(spark, ratings_pdf):
    return spark.createDataFrame(ratings_pdf, "user_idx INT, item_idx INT, rating DOUBLE, ts LONG").cache()


def _cfg(cfg, **kw):
    base = dict(rank=4, max_iter=5, reg_param=0.1, blocks=2, bias_iter=3, topn_block_users=7)
    return dataclasses.replace(cfg.als, **{**base, **kw})


def _biases_numpy(pdf: pd.DataFrame, reg_u: float, reg_i: float, n_iter: int):
    mu = pdf.rating.mean()
    r = pdf.rating.to_numpy() - mu
    u, i = pdf.user_idx.to_numpy(), pdf.item_idx.to_numpy()
    bu, bi = np.zeros(N_USERS), np.zeros(N_ITEMS)
    for _ in range(n_iter):
        bi = np.bincount(i, r - bu[u], N_ITEMS) / (reg_i + np.bincount(i, minlength=N_ITEMS))
        bu = np.bincount(u, r - bi[i], N_USERS) / (reg_u + np.bincount(u, minlength=N_USERS))
    return mu, bu, bi


def test_fit_biases_matches_numpy(ratings, ratings_pdf):
    mu, bu, bi = fit_biases(ratings, 15.0, 10.0, 3)
    mu_np, bu_np, bi_np = _biases_numpy(ratings_pdf, 15.0, 10.0, 3)
    assert mu == pytest.approx(mu_np)
    got_u = bu.toPandas().set_index("user_idx").user_bias.sort_index()
    got_i = bi.toPandas().set_index("item_idx").item_bias.sort_index()
    np.testing.assert_allclose(got_u.to_numpy(), bu_np[got_u.index], atol=1e-10)
    np.testing.assert_allclose(got_i.to_numpy(), bi_np[got_i.index], atol=1e-10)
    assert np.abs(bi_np).max() > 0.05


@pytest.mark.parametrize("plain_weight", [0.0, 0.5])
def test_explicit_predictions_match_factors_and_cold_start_has_no_nan(spark, cfg, ratings, plain_weight):
    als = _cfg(cfg, implicit=False, biases=True, clip_predictions=True, plain_weight=plain_weight)
    model = fit_als(ratings, als)
    pairs = spark.createDataFrame(
        [(0, 0), (1, 2), (5, 7), (999, 3), (2, 999), (999, 998)], "user_idx INT, item_idx INT"
    )
    pred = predict_ratings(model, pairs).toPandas().set_index(["user_idx", "item_idx"]).prediction
    assert pred.notna().all() and np.isfinite(pred).all()
    assert pred.between(1.0, 5.0).all()
    users, items = (
        f.toPandas().set_index(c).features
        for f, c in zip(factor_frames(model), ["user_idx", "item_idx"], strict=True)
    )
    bu = model.user_bias.toPandas().set_index("user_idx").user_bias
    bi = model.item_bias.toPandas().set_index("item_idx").item_bias
    width = als.rank * (2 if plain_weight else 1) + 2
    assert len(users[0]) == len(items[0]) == width
    w = plain_weight
    for u, i in [(0, 0), (1, 2), (5, 7)]:
        # The vectors carry (1-w) * (mean + biases) plus the blended factor dot products.
        assert users[u][-2] == pytest.approx(1.0) and items[i][-1] == pytest.approx(1.0)
        assert users[u][-1] == pytest.approx((1 - w) * (model.global_mean + bu[u]), rel=1e-6)
        assert items[i][-2] == pytest.approx((1 - w) * bi[i], rel=1e-5, abs=1e-7)
        assert pred[(u, i)] == pytest.approx(np.clip(np.dot(users[u], items[i]), 1, 5), abs=1e-5)
    assert pred[(999, 3)] == pytest.approx(np.clip(model.global_mean + bi[3], 1, 5))
    assert pred[(2, 999)] == pytest.approx(np.clip(model.global_mean + bu[2], 1, 5))
    assert pred[(999, 998)] == pytest.approx(model.global_mean)


@pytest.mark.slow
def test_blend_equals_average_of_the_two_models(spark, cfg, ratings):
    """plain_weight=0.5 predicts the mean of the bias+residual model and a plain ALS (same seed) on raw ratings."""
    pairs = ratings.select("user_idx", "item_idx")
    base = dict(implicit=False, clip_predictions=False)
    blend = predict_ratings(fit_als(ratings, _cfg(cfg, biases=True, plain_weight=0.5, **base)), pairs)
    resid = predict_ratings(fit_als(ratings, _cfg(cfg, biases=True, plain_weight=0.0, **base)), pairs)
    plain = predict_ratings(fit_als(ratings, _cfg(cfg, biases=False, **base)), pairs)
    key = ["user_idx", "item_idx"]
    got = blend.toPandas().merge(resid.toPandas(), on=key).merge(plain.toPandas(), on=key)
    np.testing.assert_allclose(got.prediction_x, (got.prediction_y + got.prediction) / 2, atol=1e-4)


def test_top_n_block_equals_brute_force():
    rng = np.random.default_rng(3)
    uf, vf = rng.normal(size=(9, 5)).astype(np.float32), rng.normal(size=(25, 5)).astype(np.float32)
    item_ids = np.arange(100, 125)
    seen = [rng.choice(item_ids, size=int(rng.integers(0, 8)), replace=False) for _ in range(9)]
    seen[0] = np.array([], dtype=np.int64)
    seen[1] = np.array([100, 5000])  # an id outside the catalogue is ignored
    seen[2] = None
    got = top_n_block(np.arange(9), uf, seen, item_ids, vf, n=6)
    scores = uf @ vf.T
    for u in range(9):
        excl = set() if seen[u] is None else set(seen[u].tolist())
        order = [item_ids[j] for j in np.argsort(-scores[u]) if item_ids[j] not in excl][:6]
        rows = got[got.user_idx == u].sort_values("rank")
        assert rows.item_idx.tolist() == order
        assert rows["rank"].tolist() == list(range(1, 7))
        np.testing.assert_allclose(rows.score, np.sort(scores[u, [o - 100 for o in order]])[::-1], rtol=1e-6)
    # Fewer unseen items than n: the list is just shorter.
    short = top_n_block(np.array([0]), uf[:1], [item_ids[:23]], item_ids, vf, n=6)
    assert sorted(short.item_idx) == [123, 124]


def test_recommend_top_n_blocked_equals_brute_force_and_spark(spark, cfg, ratings, ratings_pdf):
    model = fit_als(ratings, _cfg(cfg, implicit=True, alpha=5.0))
    users = spark.createDataFrame([(u,) for u in range(N_USERS)] + [(500,)], "user_idx INT")
    seen = ratings.select("user_idx", "item_idx")
    recs = recommend_top_n(model, users, seen, 5).toPandas()

    uf, vf = (f.toPandas() for f in factor_frames(model))
    item_ids = vf.item_idx.to_numpy()
    scores = np.stack(uf.features) @ np.stack(vf.features).T
    seen_by_user = ratings_pdf.groupby("user_idx").item_idx.agg(set)
    for row, u in enumerate(uf.user_idx):
        order = [item_ids[j] for j in np.argsort(-scores[row]) if item_ids[j] not in seen_by_user[u]][:5]
        assert recs[recs.user_idx == u].sort_values("rank").item_idx.tolist() == order
    merged = recs.merge(ratings_pdf, on=["user_idx", "item_idx"])
    assert merged.empty, "a seen item was recommended"
    # the user without factors (500) gets no list here: the ALS candidate source gives it the popular list
    assert (recs.groupby("user_idx").size() == 5).all() and recs.user_idx.nunique() == N_USERS
    assert 500 not in set(recs.user_idx)

    # Spark's recommendForAllUsers + anti-join picks the same items.
    ref = recommend_all_users_spark(model, seen, 5, block_size=128).toPandas()
    warm = recs
    key = ["user_idx", "rank"]
    both = warm.merge(ref, on=key, suffixes=("", "_ref"))
    assert len(both) == len(warm)
    assert (both.item_idx == both.item_idx_ref).mean() > 0.98  # float32 near-ties may swap
    np.testing.assert_allclose(both.score, both.score_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_tune_picks_the_best_grid_point_and_appends_to_table(spark, cfg, ratings):
    small = cfg.replace(
        als={"rank": 4, "max_iter": 3, "blocks": 2, "implicit": True, "checkpoint_interval": 0,
             "tune_ranks": [4], "tune_reg_params": [0.1], "tune_alphas": [1.0, 10.0]},
        evaluate={"tune_metric": "ndcg@5", "holdout_per_user": 2},
        warehouse={"database": "reelrank_tune_test"},
    )
    spark.sql("CREATE DATABASE IF NOT EXISTS reelrank_tune_test")
    ratings.write.mode("overwrite").saveAsTable("reelrank_tune_test.interactions")
    chosen = run_tuning(spark, small)
    table = spark.table("reelrank_tune_test.tuning").toPandas()
    assert len(table) == 2 and table.chosen.sum() == 1
    best = table[table.chosen].iloc[0]
    assert best.value == table.value.max() == chosen["ndcg@5"]
    assert (chosen["rank"], chosen["alpha"]) == (best["rank"], best.alpha)

    explicit = small.replace(als={"implicit": False, "tune_reg_params": [0.05, 0.5]}, evaluate={"tune_metric": "rmse"})
    results, chosen = tune_als(ratings, explicit)
    pdf = results.toPandas()
    assert len(pdf) == 2 and (pdf.alpha == explicit.als.alpha).all()  # alpha is not searched in explicit mode
    assert chosen["rmse"] == pdf.value.min() and pdf[pdf.chosen].value.iloc[0] == chosen["rmse"]
