"""One conformance suite that every registered candidate source passes (like implicit's RecommenderBaseTestMixin)."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from pydantic.dataclasses import dataclass as section

from reelrank import candidates
from reelrank import columns as C
from reelrank.candidates import CandidateSource, SourceSettings
from reelrank.popularity import SECONDS_PER_DAY, item_users, popular_unseen, rank_popularity
from reelrank.settings import SECTION
from reelrank.warehouse import storage

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
    return cfg.replace(als={"rank": 4, "max_iter": 5}, neighbours={"top_k": 10},
                       candidates={"recent_popular": {"days": 200.0}})


@pytest.fixture(scope="module", params=sorted(candidates.names()))
def fitted(request, spark, ratings, src_cfg):
    """Each registered source, fitted, and its lists for every user plus one without history."""
    source = candidates.make(request.param, src_cfg).fit(ratings)
    users = ratings.select(C.USER_IDX).distinct().union(spark.createDataFrame([(COLD_USER,)], "user_idx INT"))
    recs = source.recommend(users, N).toPandas()
    return request.param, source, recs


@pytest.mark.slow  # fits every real source
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
        window = src_cfg.candidates["recent_popular"].days if name == "recent_popular" else 0.0
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
    recent = rank_popularity(item_users(ratings, src_cfg.candidates["recent_popular"].days), N).toPandas()
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


def test_sequence_source_serves_later_items_from_its_history_fit(spark, ratings, src_cfg):
    """``served_on`` (``[candidates] serve_from_history``): the history fit reads each user's latest items of the
    later data, leaves out items it never saw (item 30, new tonight), and drops every item seen in the later data;
    its lists are the model's own top-N after the latest item (:meth:`SequenceModel.score_last`)."""
    from reelrank.seqmodels import pad_left

    df = _ratings()
    new = pd.DataFrame({C.USER_IDX: [0, 1, 2], C.ITEM_IDX: [N_ITEMS] * 3, C.RATING: [4.0] * 3,
                        C.TS: [1001 * DAY] * 3})
    later_pd = pd.concat([df, new], ignore_index=True)
    schema = "user_idx INT, item_idx INT, rating DOUBLE, ts LONG"
    later = spark.createDataFrame(later_pd, schema)
    history = later.filter(later[C.TS] < 996 * DAY)
    cfg = src_cfg.replace(sequence={"epochs": 2, "max_len": 20})
    fitted = candidates.make("sasrec", cfg).fit(history)
    assert candidates.make("popular", cfg).fit(history).served_on(later) is None, "popularity is refitted"
    served = fitted.served_on(later)
    assert served is not None
    recs = served.recommend(later.select(C.USER_IDX).distinct(), N).toPandas()

    model = fitted.model
    assert model.n_items == N_ITEMS
    known = later_pd[later_pd[C.ITEM_IDX] < model.n_items].sort_values([C.USER_IDX, C.TS, C.ITEM_IDX])
    users = sorted(known[C.USER_IDX].unique())
    seqs = [known.loc[known[C.USER_IDX] == u, C.ITEM_IDX].to_numpy() + 1 for u in users]
    scores = model.score_last(pad_left(seqs, cfg.sequence.max_len)).numpy()
    for row, user in enumerate(users):
        seen = set(later_pd.loc[later_pd[C.USER_IDX] == user, C.ITEM_IDX])
        s = scores[row].astype(np.float64)
        s[sorted(i for i in seen if i < model.n_items)] = -np.inf
        got = recs[recs[C.USER_IDX] == user].sort_values(C.RANK)[C.ITEM_IDX].to_numpy()
        assert not seen & set(got) and len(got) == N, f"user {user}"
        # the model's top-N scores, in order (a near-tie may swap two items between float paths)
        np.testing.assert_allclose(s[got], np.sort(s)[::-1][:N], rtol=1e-4, atol=1e-5, err_msg=f"user {user}")
    late = later_pd.loc[later_pd[C.TS] >= 996 * DAY, C.USER_IDX].nunique()
    assert late > 10, "the later data must add items to many users' sequences"



@pytest.mark.slow
@pytest.mark.parametrize("name", ["als", "ease", "sasrec"])
def test_served_from_the_history_fit_the_lists_follow_the_later_data(spark, src_cfg, name):
    """Every source that ``served_on`` later data (``[candidates] serve_from_history``): its lists drop everything
    seen later, never hold an item the fit does not know (item 30, new), give a user without history the later
    data's popular list (so does user 77, whose only item is new), and move with the later data."""
    df = _ratings()
    new_user = 77
    later = spark.createDataFrame(pd.concat([df, pd.DataFrame({C.USER_IDX: [0, 1, new_user], C.ITEM_IDX: [N_ITEMS] * 3,
                                                                 C.RATING: [4.0] * 3, C.TS: [1001 * DAY] * 3})]),
                                  "user_idx INT, item_idx INT, rating DOUBLE, ts LONG")
    history = later.filter(later[C.TS] < 996 * DAY)
    cfg = src_cfg.replace(sequence={"epochs": 2, "max_len": 20})
    fitted = candidates.make(name, cfg).fit(history)
    served = fitted.served_on(later)
    assert served is not None
    users = later.select(C.USER_IDX).distinct().union(spark.createDataFrame([(COLD_USER,)], "user_idx INT"))
    recs = served.recommend(users, N).toPandas()
    before = fitted.recommend(users, N).toPandas()
    seen = later.select(C.USER_IDX, C.ITEM_IDX).toPandas()
    assert recs.merge(seen, on=[C.USER_IDX, C.ITEM_IDX]).empty
    assert N_ITEMS not in set(recs[C.ITEM_IDX])
    assert (recs.groupby(C.USER_IDX).size() == N).all() and recs[C.USER_IDX].nunique() == N_USERS + 2
    popular = rank_popularity(item_users(later), N + 1).toPandas().sort_values(C.RANK)[C.ITEM_IDX].tolist()
    assert recs[recs[C.USER_IDX] == COLD_USER].sort_values(C.RANK)[C.ITEM_IDX].tolist() == popular[:N]
    expect = [i for i in popular if i != N_ITEMS][:N]
    assert recs[recs[C.USER_IDX] == new_user].sort_values(C.RANK)[C.ITEM_IDX].tolist() == expect
    key = [C.USER_IDX, C.RANK]
    changed = recs.sort_values(key)[C.ITEM_IDX].to_numpy() != before.sort_values(key)[C.ITEM_IDX].to_numpy()
    assert changed.any(), "the later data must move some lists"


def test_refit_runs_whole_epochs_within_its_position_cap(cfg):
    """``refit_plan``: ml-100k's ~99k-position epochs refit ``refit_epochs``; 1M-position epochs (the 1M night) do
    not fit 800k, so the history fit serves; a cap of 0 keeps the old behaviour. Positions, never seconds."""
    from reelrank.models import EpochStats
    from reelrank.seqmodels import SequenceModel

    seq = dataclasses.replace(cfg.sequence, epochs=200, refit_epochs=5, refit_max_positions=800_000,
                              max_positions=10_000_000)
    model = SequenceModel("sasrec", 10, seq)

    def planned(*positions):
        model.history.epochs = [EpochStats(i, 1.0, None, None, 1.0, 9.9, n) for i, n in enumerate(positions)]
        plan = candidates.refit_plan(model, seq)[0]
        return plan and (plan.epochs, plan.max_positions)

    assert planned(99_000, 99_000, 99_000) == (5, 800_000)
    assert planned(300_000, 300_000, 1_000) == (2, 800_000)  # whole epochs; a last epoch cut by the cap is short
    assert planned(1_000_000) is None
    unplanned = candidates.refit_plan(model, dataclasses.replace(seq, refit_max_positions=0))[0]
    assert unplanned is not None and (unplanned.epochs, unplanned.max_positions) == (5, 10_000_000)
    # the smaller of the two caps bounds the refit
    planned(99_000)
    assert candidates.refit_plan(model, dataclasses.replace(seq, max_positions=30_000))[0].max_positions == 30_000


def test_als_and_ease_on_big_nights_serve_from_the_history_fit(cfg):
    """``[candidates] refit_max_interactions``: ALS and EASE on a night with more interactions serve tonight from
    the history fit; others (and any source listed in ``serve_from_history``) follow their own rule; 0 always
    refits. A count, so the same night decides the same way on any machine."""
    capped = cfg.replace(candidates={"refit_max_interactions": 5_000_000, "serve_from_history": ["sasrec"]})
    assert (candidates.serves_from_history("als", capped, 10_000_000)
            == "10,000,000 interactions, over [candidates] refit_max_interactions 5,000,000")
    assert candidates.serves_from_history("ease", capped, 5_000_001)
    assert not candidates.serves_from_history("als", capped, 5_000_000)
    assert not candidates.serves_from_history("item_neighbours", capped, 10**9)
    assert not candidates.serves_from_history("gru4rec", capped, 10**9)  # [sequence] refit_max_positions instead
    assert candidates.serves_from_history("sasrec", capped, 0) == "set in [candidates] serve_from_history"
    uncapped = capped.replace(candidates={"refit_max_interactions": 0})
    assert not candidates.serves_from_history("ease", uncapped, 10**9)


def test_a_refit_over_budget_serves_tonight_from_the_history_fit(spark, ratings, src_cfg):
    """The nightly's second SASRec fit, when an epoch of the first had more positions than ``refit_max_positions``:
    no training, the history fit's weights, tonight's sequences."""
    cfg = src_cfg.replace(sequence={"epochs": 2, "max_len": 20, "refit_max_positions": 1})
    history = ratings.filter(ratings[C.TS] < 996 * DAY)
    first = candidates.make("sasrec", cfg).fit(history)
    second = candidates.make("sasrec", cfg)
    second.start_from(first)
    second.fit(ratings)
    assert second.model is first.model
    served = first.served_on(ratings).recommend(ratings.select(C.USER_IDX).distinct(), N).toPandas()
    again = second.recommend(ratings.select(C.USER_IDX).distinct(), N).toPandas()
    key = [C.USER_IDX, C.RANK]
    pd.testing.assert_frame_equal(served.sort_values(key).reset_index(drop=True),
                                  again.sort_values(key).reset_index(drop=True))


# --- Adding a source is one module and one TOML table: toy sources registered here, nothing else changed ---------


@section(frozen=True, config=SECTION)
class ToySettings(SourceSettings):
    boost: float
    """A setting of the toy's own, read from ``[candidates.toy] boost``."""


class ToySource(CandidateSource):
    """A toy feature source: the popular ranking with every score multiplied by its ``boost``."""

    name = "toy"
    settings_type = ToySettings
    feature_prefix = "toy"

    def fit(self, interactions):
        self.use(interactions)
        return self

    def recommend_warm(self, users, n):
        from pyspark.sql import functions as F

        boost = self.settings.boost
        return popular_unseen(self._popular, users, self._seen, n).withColumn(C.SCORE, F.col(C.SCORE) * boost)


class HindsightSource(CandidateSource):
    """A toy that knows each user's held-out items (``answers``, set by the test once the matrix stage split them):
    those not yet seen first, then the popular unseen items. Its list beats every other on the holdout, so the
    nightly must pick it as the champion and publish it."""

    name = "hindsight"
    answers: pd.DataFrame | None = None

    def fit(self, interactions):
        self.use(interactions)
        return self

    def recommend_warm(self, users, n):
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        assert self.answers is not None
        known = (users.sparkSession.createDataFrame(self.answers, "user_idx INT, item_idx INT")
                 .join(users, C.USER_IDX, "left_semi").join(self._seen, [C.USER_IDX, C.ITEM_IDX], "left_anti")
                 .withColumn(C.SCORE, F.lit(1e9).cast("float")))
        padded = known.unionByName(popular_unseen(self._popular, users, self._seen, n).drop(C.RANK))
        order = Window.partitionBy(C.USER_IDX).orderBy(F.col(C.SCORE).desc(), F.col(C.ITEM_IDX))
        best = padded.groupBy(C.USER_IDX, C.ITEM_IDX).agg(F.max(C.SCORE).alias(C.SCORE))
        return best.withColumn(C.RANK, F.row_number().over(order)).filter(F.col(C.RANK) <= n)


@contextmanager
def registered(source):
    """``source`` in the registry for the block, then gone (other tests load configs without its table)."""
    candidates.register(source)
    try:
        yield source
    finally:
        candidates.unregister(source.name)


@pytest.mark.slow
def test_a_registered_source_is_configured_and_featured_with_no_other_change(spark, cfg):
    """The toy's table and its place in ``[candidates] sources`` are required like any feature source's, its settings
    reach it, and the ranker's features describe its list (``f_toy_score``, ``f_toy_rank``)."""
    from reelrank import features
    from reelrank.config import ConfigError

    with registered(ToySource):
        with pytest.raises(ConfigError, match=r"<replace>: missing key candidates\.toy$"):
            cfg.replace()
        with pytest.raises(ConfigError, match=r"candidates\.sources must be a list holding als, item_neighbours, "
                                              r"popular, ease, sasrec, toy, got"):
            cfg.replace(candidates={"toy": {"n": 3, "boost": 2.0}})
        toy_cfg = cfg.replace(candidates={"toy": {"n": 120, "boost": 2.0},
                                          "sources": [*cfg.candidates.sources, "toy"]})
        assert features.sources()[-1] == "toy" and features.missing_rank(toy_cfg) == 121.0  # past the longest list
        history = spark.createDataFrame(_ratings(), "user_idx INT, item_idx INT, rating DOUBLE, ts LONG")
        toy = candidates.make("toy", toy_cfg).fit(history)
        users = spark.createDataFrame([(0,), (1,), (COLD_USER,)], "user_idx INT")
        lists = {"toy": toy.recommend(users, 3), "popular": candidates.make("popular", toy_cfg).fit(history)
                 .recommend(users, 3)}
        got = toy.recommend(users, 3).toPandas()
        popular = popular_unseen(item_users(history), users, history.select(C.USER_IDX, C.ITEM_IDX), 3).toPandas()
        warm = got[C.USER_IDX] != COLD_USER
        np.testing.assert_allclose(got[warm].sort_values([C.USER_IDX, C.RANK])[C.SCORE],
                                   2.0 * popular[popular[C.USER_IDX] != COLD_USER].sort_values([C.USER_IDX, C.RANK])[
                                       C.SCORE])
        out = features.build_features(history, spark.createDataFrame([], "item_idx INT, genres ARRAY<STRING>"), lists,
                                      features.missing_rank(toy_cfg))
        assert {"f_toy_score", "f_toy_rank", "f_in_popular"} <= set(out.columns)
        assert out.filter("f_toy_rank < 1.0").count() > 0  # log1p(rank 1 or 2) on the toy's own candidates
    assert "toy" not in candidates.names()
    with pytest.raises(ValueError, match="registered already"):
        candidates.register(type("Other", (ToySource,), {"name": "als"}))


@pytest.mark.slow
def test_a_registered_source_is_fitted_evaluated_and_published_by_the_nightly(spark, cfg):
    """The nightly, stage by stage, with the hindsight toy in ``[candidates] sources``: its lists are fitted on the
    history and on all interactions, evaluated beside the others, chosen as the champion and published."""
    from datetime import date

    from pyspark.sql import functions as F

    from reelrank import pipeline

    day, db = date(2026, 11, 2), "reelrank_toy"
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {db}")
    with registered(HindsightSource):
        toy_cfg = cfg.replace(warehouse={"database": db}, candidates={
            "hindsight": {"n": 10}, "sources": ["als", "item_neighbours", "popular", "ease", "sasrec", "hindsight"]})
        ctx = None
        for stage in ("ingest", "matrix"):
            ctx = pipeline.run_stage(spark, toy_cfg, day, stage)
        assert ctx is not None
        HindsightSource.answers = spark.read.parquet(ctx.location("holdout")).select(
            F.col(C.USER_IDX).cast("int"), F.col(C.ITEM_IDX).cast("int")).toPandas()
        for stage in ("neighbours", "candidates", "features", "train", "evaluate", "score", "publish"):
            ctx = pipeline.run_stage(spark, toy_cfg, day, stage)
    HindsightSource.answers = None
    for split in ("candidates_history", "candidates_full"):
        assert "hindsight" in storage.listdir(ctx.location(split), dirs_only=True)
    metrics = spark.table(f"{db}.metrics").filter(F.col(C.RUN_DATE) == F.lit(day))
    assert metrics.filter(F.col(C.MODEL) == "hindsight").count() > 0
    assert ctx.record.published_model == "hindsight", ctx.record.published_why
    recs = spark.table(f"{db}.recommendations").filter(F.col(C.RUN_DATE) == F.lit(day))
    assert {r[0] for r in recs.select(C.MODEL).distinct().collect()} == {"hindsight"}
