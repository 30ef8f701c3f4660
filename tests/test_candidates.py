"""One conformance suite that every registered candidate source passes (like implicit's RecommenderBaseTestMixin)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reelrank import candidates
from reelrank import columns as C
from reelrank.popularity import SECONDS_PER_DAY, item_users, popular_unseen, rank_popularity

pytestmark = pytest.mark.spark

N_USERS, N_ITEMS, N = 40, 30, 5
COLD_USER = 999
DAY = SECONDS_PER_DAY


def _ratings() -> pd.DataFrame:
    """Low-rank ratings with a popularity skew; items 25..29 are rated only in the last 10 days (a recent hit);
    items 0 and 1 are rated by the same users so their popularity ties exactly."""
    rng = np.random.default_rng(7)
    u, v = rng.normal(size=(N_USERS, 3)), rng.normal(size=(N_ITEMS, 3))
    rows = []
    for user in range(N_USERS):
        p = np.exp(-np.arange(N_ITEMS) / 10.0)
        p[25:] = 0.3
        items = rng.choice(N_ITEMS, size=int(rng.integers(6, 14)), replace=False, p=p / p.sum())
        items = set(items) | ({0, 1} if user % 3 == 0 else set())
        items -= set() if user % 3 == 0 else {0, 1}
        for item in sorted(items):
            rating = float(np.clip(np.rint(3 + u[user] @ v[item]), 1, 5))
            ts = 1000 * DAY - int(rng.integers(0, 10)) * DAY if item >= 25 else int(rng.integers(0, 900)) * DAY
            rows.append((user, int(item), rating, ts))
    return pd.DataFrame(rows, columns=[C.USER_IDX, C.ITEM_IDX, C.RATING, C.TS])


@pytest.fixture(scope="module")
def ratings(spark):
    return spark.createDataFrame(_ratings(), "user_idx INT, item_idx INT, rating DOUBLE, ts LONG").cache()


@pytest.fixture(scope="module")
def src_cfg(cfg):
    return cfg.replace(als={"rank": 4, "max_iter": 5}, neighbours={"top_k": 10}, candidates={"recent_days": 200.0})


@pytest.fixture(scope="module", params=sorted(candidates.REGISTRY))
def fitted(request, spark, ratings, src_cfg):
    """Each registered source, fitted, and its lists for every user plus one without history."""
    source = candidates.make(request.param, src_cfg).fit(ratings)
    users = ratings.select(C.USER_IDX).distinct().union(spark.createDataFrame([(COLD_USER,)], "user_idx INT"))
    recs = source.recommend(users, N).toPandas()
    return request.param, source, recs


class TestCandidateSourceConformance:
    def test_columns_and_types(self, fitted):
        _, _, recs = fitted
        assert list(recs.columns) == [C.USER_IDX, C.ITEM_IDX, C.SCORE, C.RANK]
        assert all(pd.api.types.is_integer_dtype(recs[c]) for c in (C.USER_IDX, C.ITEM_IDX, C.RANK))
        assert recs[C.SCORE].notna().all()

    def test_ranks_are_one_to_n(self, fitted):
        name, _, recs = fitted
        ranks = recs.sort_values([C.USER_IDX, C.RANK]).groupby(C.USER_IDX)[C.RANK].apply(list)
        assert all(r == list(range(1, len(r) + 1)) and len(r) <= N for r in ranks)
        assert not recs.duplicated([C.USER_IDX, C.ITEM_IDX]).any()
        full = (ranks.apply(len) == N).mean()
        assert full == 1.0 if name != "item_neighbours" else full > 0.9, f"{name}: {full:.0%} of users got {N}"

    def test_no_seen_item(self, fitted):
        _, _, recs = fitted
        seen = _ratings()[[C.USER_IDX, C.ITEM_IDX]]
        assert recs.merge(seen, on=[C.USER_IDX, C.ITEM_IDX]).empty

    def test_ties_broken_by_item_index(self, fitted):
        _, _, recs = fitted
        for _, lst in recs.sort_values([C.USER_IDX, C.RANK]).groupby(C.USER_IDX):
            s, i = lst[C.SCORE].to_numpy(), lst[C.ITEM_IDX].to_numpy()
            assert (np.diff(s) <= 1e-12).all(), "scores must not increase with rank"
            tied = np.diff(s) == 0
            assert (np.diff(i)[tied] > 0).all(), "equal scores must go to the smaller item first"

    def test_user_without_history_gets_the_popular_list(self, fitted, ratings, src_cfg):
        name, _, recs = fitted
        window = src_cfg.candidates.recent_days if name == "recent_popular" else 0.0
        popular = rank_popularity(item_users(ratings, window), N).toPandas().sort_values(C.RANK)
        cold = recs[recs[C.USER_IDX] == COLD_USER].sort_values(C.RANK)
        assert cold[C.ITEM_IDX].tolist() == popular[C.ITEM_IDX].tolist()

    def test_same_seed_same_output(self, fitted, spark, ratings, src_cfg):
        name, _, recs = fitted
        users = ratings.select(C.USER_IDX).distinct().union(spark.createDataFrame([(COLD_USER,)], "user_idx INT"))
        again = candidates.make(name, src_cfg).fit(ratings).recommend(users, N).toPandas()
        key = [C.USER_IDX, C.RANK]
        a, b = recs.sort_values(key).reset_index(drop=True), again.sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(a[key + [C.ITEM_IDX]], b[key + [C.ITEM_IDX]])
        np.testing.assert_allclose(a[C.SCORE], b[C.SCORE], rtol=1e-6)


def test_recent_popularity_follows_the_window(ratings, src_cfg):
    """The recent hit (items 25..29, rated only in the last 10 days) leads the 200-day list, not the all-time one."""
    recent = rank_popularity(item_users(ratings, src_cfg.candidates.recent_days), N).toPandas()
    alltime = rank_popularity(item_users(ratings), N).toPandas()
    assert set(recent[C.ITEM_IDX]) <= set(range(25, 30))
    assert not set(alltime[C.ITEM_IDX]) & set(range(25, 30))


def test_tied_popularity_goes_to_the_smaller_item(ratings):
    """Items 0 and 1 have the same users, so the same count: 0 ranks first."""
    ranked = rank_popularity(item_users(ratings), N_ITEMS).toPandas().set_index(C.ITEM_IDX)
    assert ranked.loc[0, C.SCORE] == ranked.loc[1, C.SCORE]
    assert ranked.loc[0, C.RANK] + 1 == ranked.loc[1, C.RANK]


def test_popular_unseen_walks_the_ranking_past_each_users_items(spark, ratings):
    """Every user's list is the popularity order (ties to the smaller item) with their own items left out."""
    pdf = _ratings()
    users = spark.createDataFrame([(u,) for u in range(N_USERS)] + [(COLD_USER,)], "user_idx INT")
    got = popular_unseen(item_users(ratings), users, ratings.select(C.USER_IDX, C.ITEM_IDX), N).toPandas()
    count = pdf.groupby(C.ITEM_IDX)[C.USER_IDX].nunique()
    order = sorted(count.index, key=lambda i: (-count[i], i))
    for user in [*range(N_USERS), COLD_USER]:
        seen = set(pdf.loc[pdf[C.USER_IDX] == user, C.ITEM_IDX])
        want = [i for i in order if i not in seen][:N]
        mine = got[got[C.USER_IDX] == user].sort_values(C.RANK)
        assert mine[C.ITEM_IDX].tolist() == want and mine[C.RANK].tolist() == list(range(1, N + 1))
        assert mine[C.SCORE].tolist() == [float(count[i]) for i in want]
