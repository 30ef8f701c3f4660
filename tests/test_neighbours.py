"""Pearson neighbours against a numpy reference on a small hand-built matrix."""

from __future__ import annotations

import dataclasses
import heapq
import math

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from reelrank import columns as C
from reelrank import knn, neighbour_sampling, pair_kernel
from reelrank import neighbours as nbr

pytestmark = pytest.mark.spark

# user -> {item: rating}. u4 rates everything 4 (zero variance as a user); i5 is rated 3 by all (zero variance
# as an item); i6 is co-rated with any other item by u3 only (single-overlap pairs); u5 shares one item with most.
MATRIX = {
    0: {0: 5, 1: 3, 2: 4, 3: 1, 5: 3},
    1: {0: 3, 1: 1, 2: 2, 4: 5, 5: 3},
    2: {0: 4, 1: 3, 2: 4, 3: 2, 4: 1, 5: 3},
    3: {0: 2, 2: 5, 3: 3, 6: 1},
    4: {1: 4, 3: 4, 4: 4},
    5: {4: 2, 0: 1},
    6: {0: 4, 1: 2, 2: 5, 3: 2, 4: 3},
}
RATINGS_SCHEMA = T.StructType(
    [
        T.StructField(C.USER_IDX, T.IntegerType(), False),
        T.StructField(C.ITEM_IDX, T.IntegerType(), False),
        T.StructField(C.RATING, T.DoubleType(), False),
    ]
)
PAIRS_SCHEMA = T.StructType(
    [
        T.StructField(C.USER_IDX, T.IntegerType(), False),
        T.StructField(C.ITEM_IDX, T.IntegerType(), False),
        T.StructField("tag", T.StringType(), False),
    ]
)
ROWS = [(u, i, float(r)) for u, items in MATRIX.items() for i, r in items.items()]
N_USERS, N_ITEMS = 7, 7


def dense() -> np.ndarray:
    """users × items with NaN where unrated."""
    R = np.full((N_USERS, N_ITEMS), np.nan)
    for u, i, r in ROWS:
        R[u, i] = r
    return R


def ref_sims(by: str, min_support: int, shrinkage: float = 0.0) -> dict[tuple[int, int], tuple[float, int]]:
    """Pearson over the common support, pair by pair with numpy (means over the common support)."""
    R = dense() if by == "user" else dense().T
    out = {}
    for a in range(R.shape[0]):
        for b in range(R.shape[0]):
            common = ~np.isnan(R[a]) & ~np.isnan(R[b])
            n = int(common.sum())
            if a == b or n < min_support or n < 1:
                continue
            x, y = R[a, common], R[b, common]
            dx, dy = x - x.mean(), y - y.mean()
            den = math.sqrt((dx**2).sum() * (dy**2).sum())
            if den == 0:
                continue
            sim = (dx * dy).sum() / den
            out[(a, b)] = (sim * n / (n + shrinkage) if shrinkage else sim, n)
    return out


def ref_top_k(sims: dict, k: int, rank_shrinkage: float = 0.0) -> dict[int, list[int]]:
    lists: dict[int, list[tuple[float, int]]] = {}
    for (a, b), (s, n) in sims.items():
        lists.setdefault(a, []).append((-(s * n / (n + rank_shrinkage)) if rank_shrinkage else -s, b))
    return {a: [b for _, b in sorted(v)[:k]] for a, v in lists.items()}


def ref_predict(by: str, pairs: list[tuple[int, int]], sims: dict, k: int, min_k: int, allowed=None):
    """KNNWithMeans.estimate + AlgoBase.predict, transcribed: nlargest k among raters, sim > 0, min_k, clip."""
    R = dense()
    gmean = np.nanmean(R)
    X = R if by == "user" else R.T
    means = np.nanmean(X, axis=1)
    out = {}
    for u, i in pairs:
        if u >= N_USERS or i >= N_ITEMS or np.isnan(R[u]).all() or np.isnan(R[:, i]).all():
            out[(u, i)] = (gmean, True)
            continue
        x, y = (u, i) if by == "user" else (i, u)
        raters = [v for v in range(X.shape[0]) if not np.isnan(X[v, y]) and v != x]
        neigh = [(v, sims.get((x, v), (0.0, 0))[0], X[v, y]) for v in raters]
        if allowed is not None:
            neigh = [t for t in neigh if t[0] in allowed.get(x, [])]
        chosen = heapq.nlargest(k, neigh, key=lambda t: t[1])
        num = den = 0.0
        actual = 0
        for v, s, r in chosen:
            if s > 0:
                num += s * (r - means[v])
                den += s
                actual += 1
        est = means[x] + (num / den if actual >= max(min_k, 1) else 0.0)
        out[(u, i)] = (min(max(est, 1.0), 5.0), actual < max(min_k, 1))
    return out


@pytest.fixture(scope="module")
def ratings(spark):
    return spark.createDataFrame(ROWS, RATINGS_SCHEMA)


def ncfg(cfg, **over):
    base = dict(min_support=2, shrinkage=0.0, max_ratings_per_user=0, max_ratings_per_item=0, blocks=2,
                list_shrinkage=0.0)
    base.update(over)
    return dataclasses.replace(cfg.neighbours, **base)


def as_dict(df) -> dict[tuple[int, int], tuple[float, int]]:
    pdf = df.toPandas()
    cols = [nbr.ENTITY, nbr.NEIGHBOUR, nbr.SIMILARITY, nbr.SUPPORT]
    return {(int(e), int(n)): (float(s), int(c)) for e, n, s, c in pdf[cols].itertuples(index=False)}


def assert_same_sims(got: dict, want: dict) -> None:
    assert set(got) == set(want), f"extra {sorted(set(got) - set(want))}, missing {sorted(set(want) - set(got))}"
    for key, (s, n) in want.items():
        assert got[key][1] == n, key
        assert got[key][0] == pytest.approx(s, abs=1e-12), key


@pytest.mark.parametrize("by", ["user", "item"])
@pytest.mark.parametrize("blocks", [1, 3])
def test_similarities_match_numpy(ratings, cfg, by, blocks):
    got = as_dict(nbr.similarities(ratings, by, ncfg(cfg, blocks=blocks)))
    want = ref_sims(by, 2)
    assert_same_sims(got, want)
    assert all(not math.isnan(s) for s, _ in got.values())
    if by == "user":  # u4 rates everything 4: no similarity row in either direction
        assert not any(4 in key for key in got)
    else:  # i5 always 3, i6 only ever co-rated once
        assert not any(5 in key or 6 in key for key in got)
    assert all((b, a) in got for a, b in got)


@pytest.mark.parametrize("square", [True, False])
@pytest.mark.parametrize(("local_k", "rank_shrinkage"), [(None, 0.0), (3, 0.0), (4, 5.0)])
def test_chunked_products_equal_one_product(square, local_k, rank_shrinkage):
    rng = np.random.default_rng(7)
    ent, oth = rng.integers(0, 60, 900), rng.integers(0, 40, 900)
    rating = rng.integers(1, 6, 900).astype(float)
    in_a = None if square else ent % 3 == 0
    args = (ent, oth, rating, in_a, 2, 0.0, local_k, rank_shrinkage)
    order = [nbr.ENTITY, nbr.NEIGHBOUR]
    whole = pair_kernel.pair_similarities(*args).sort_values(order, ignore_index=True)
    # many more pairs than the top-k keep: merges count
    assert len(pair_kernel.pair_similarities(*args[:6])) > 60 * 4 * 4
    for max_pairs in (1, 37, 400):  # one entity per chunk, a few, many
        chunked = pair_kernel.pair_similarities(*args, max_pairs=max_pairs).sort_values(order, ignore_index=True)
        pd.testing.assert_frame_equal(chunked, whole)


def ref_cosine(by: str, min_support: int) -> dict[tuple[int, int], tuple[float, int]]:
    """Cosine of the binary rated/unrated vectors, pair by pair with numpy."""
    M = ~np.isnan(dense() if by == "user" else dense().T)
    out = {}
    for a in range(M.shape[0]):
        for b in range(M.shape[0]):
            n = int((M[a] & M[b]).sum())
            if a != b and n >= max(min_support, 1):
                out[(a, b)] = (n / math.sqrt(M[a].sum() * M[b].sum()), n)
    return out


@pytest.mark.parametrize("by", ["user", "item"])
@pytest.mark.parametrize("blocks", [1, 3])
def test_equal_ratings_switch_to_binary_cosine_and_say_so(spark, cfg, by, blocks, caplog):
    """Implicit feedback (every rating the same) gives Pearson no variance, so no pair at all: ``auto`` switches to
    the cosine of the binary vectors, logs it, and matches numpy; ``pearson`` keeps the empty answer (issue 30)."""
    plays = spark.createDataFrame([(u, i, 1.0) for u, i, _ in ROWS], RATINGS_SCHEMA)
    with caplog.at_level("INFO", logger="reelrank.neighbours"):
        got = as_dict(nbr.similarities(plays, by, ncfg(cfg, blocks=blocks, similarity="auto")))
    assert f"{by}-{by} similarity is cosine on binary data: every rating is 1" in caplog.text
    assert_same_sims(got, ref_cosine(by, 2))
    assert len(got) > 0
    assert not as_dict(nbr.similarities(plays, by, ncfg(cfg, blocks=blocks, similarity="pearson")))
    assert nbr.similarity_measure(spark.createDataFrame(ROWS, RATINGS_SCHEMA), by, ncfg(cfg)) == "pearson"


@pytest.mark.parametrize("square", [True, False])
def test_chunked_cosine_equals_one_product(square):
    rng = np.random.default_rng(11)
    ent, oth = rng.integers(0, 50, 700), rng.integers(0, 30, 700)
    args = (ent, oth, np.ones(700), None if square else ent % 3 == 0, 2, 3.0, 4, 2.0)
    order = [nbr.ENTITY, nbr.NEIGHBOUR]
    whole = pair_kernel.pair_similarities(*args, measure="cosine").sort_values(order, ignore_index=True)
    assert len(whole) > 0 and whole[nbr.SIMILARITY].between(0, 1).all()
    for max_pairs in (1, 37):
        chunked = pair_kernel.pair_similarities(*args, max_pairs=max_pairs, measure="cosine")
        pd.testing.assert_frame_equal(chunked.sort_values(order, ignore_index=True), whole)


def test_support_one_and_shrinkage(ratings, cfg):
    # min_support 1 adds nothing: a single co-rating has zero variance on both sides
    assert_same_sims(as_dict(nbr.similarities(ratings, "item", ncfg(cfg, min_support=1))), ref_sims("item", 1))
    want = ref_sims("user", 3, shrinkage=2.5)
    assert want and all(n >= 3 for _, n in want.values())
    assert_same_sims(as_dict(nbr.similarities(ratings, "user", ncfg(cfg, min_support=3, shrinkage=2.5))), want)


def test_top_k_ranks_and_ties(spark):
    rows = [(0, 3, 0.5, 2), (0, 1, 0.9, 2), (0, 2, 0.5, 30), (0, 4, -0.2, 2), (1, 0, 0.9, 2), (1, 2, 0.9, 4)]
    sims = spark.createDataFrame(rows, nbr.SIM_SCHEMA)
    got = nbr.top_k(sims, 2)
    want = spark.createDataFrame(
        [(0, 1, 0.9, 2, 1), (0, 2, 0.5, 30, 2), (1, 0, 0.9, 2, 1), (1, 2, 0.9, 4, 2)],
        T.StructType([*nbr.SIM_SCHEMA.fields, T.StructField(C.RANK, T.IntegerType(), False)]),
    )
    assertDataFrameEqual(got, want)
    # significance weighting: 0.9 at support 2 ranks below 0.5 at support 30 once shrunk by n / (n + 10)
    shrunk = nbr.top_k(sims, 1, rank_shrinkage=10.0).toPandas().set_index(nbr.ENTITY)[nbr.NEIGHBOUR].to_dict()
    assert shrunk == {0: 2, 1: 2}


@pytest.mark.parametrize(("by", "list_shrinkage"), [("user", 0.0), ("item", 1.5)])
def test_neighbour_lists_equal_two_step_top_k(ratings, cfg, by, list_shrinkage):
    c = ncfg(cfg, blocks=3, list_shrinkage=list_shrinkage, max_pairs_per_chunk=2)
    fused = nbr.neighbour_lists(ratings, by, c, k=2)
    assert {tuple(r) for r in fused.select(nbr.SAMPLED, nbr.CAPPED_SHARE).distinct().collect()} == {(False, 0.0)}
    fused = fused.drop(nbr.SAMPLED, nbr.CAPPED_SHARE)
    assertDataFrameEqual(fused, nbr.top_k(nbr.similarities(ratings, by, c), 2, list_shrinkage))
    want = ref_top_k(ref_sims(by, 2), 2, list_shrinkage)
    got = fused.toPandas().sort_values([nbr.ENTITY, C.RANK]).groupby(nbr.ENTITY)[nbr.NEIGHBOUR].apply(list).to_dict()
    assert got == want


@pytest.mark.parametrize("by", ["user", "item"])
@pytest.mark.parametrize("mode", ["exact", "topk"])
def test_predict_matches_reference(spark, ratings, cfg, by, mode):
    # every unrated cell, plus an unknown user (9) and an unknown item (8)
    cells = [(u, i) for u in range(N_USERS) for i in range(N_ITEMS) if i not in MATRIX[u]] + [(9, 0), (0, 8)]
    pairs = spark.createDataFrame([(u, i, f"{u}-{i}") for u, i in cells], PAIRS_SCHEMA)
    c = ncfg(cfg, k=2, min_k=2, top_k=2)
    sims = ref_sims(by, 2)
    allowed = ref_top_k(sims, 2) if mode == "topk" else None
    want = ref_predict(by, cells, sims, k=2, min_k=2, allowed=allowed)
    out = knn.predict(ratings, pairs, by, c, mode=mode).toPandas()
    assert len(out) == len(cells) and set(out["tag"]) == {f"{u}-{i}" for u, i in cells}
    cols = [C.USER_IDX, C.ITEM_IDX, C.PREDICTION, nbr.FALLBACK]
    got = {(int(u), int(i)): (p, f) for u, i, p, f in out[cols].itertuples(index=False)}
    for key, (p, f) in want.items():
        assert got[key][0] == pytest.approx(p, abs=1e-12), key
        assert bool(got[key][1]) == f, key
    flags = [f for _, f in want.values()]
    assert any(flags) and not all(flags), "the fixture must exercise both fallback and neighbour predictions"
    assert knn.fallback_rate(spark.createDataFrame(out)) == pytest.approx(np.mean(flags))


def test_cap_ratings_is_seeded_and_exact(ratings, cfg):
    capped = neighbour_sampling.cap_ratings(ratings, C.USER_IDX, 2, seed=7).toPandas()
    counts = capped.groupby(C.USER_IDX).size()
    want = {u: min(len(items), 2) for u, items in MATRIX.items()}
    assert counts.to_dict() == want
    all_rows = {(u, i) for u, i, _ in ROWS}
    assert set(zip(capped[C.USER_IDX], capped[C.ITEM_IDX], strict=True)) <= all_rows
    again = neighbour_sampling.cap_ratings(ratings, C.USER_IDX, 2, seed=7).toPandas()
    key = [C.USER_IDX, C.ITEM_IDX]
    pd.testing.assert_frame_equal(capped.sort_values(key, ignore_index=True), again.sort_values(key, ignore_index=True))
    assert neighbour_sampling.cap_ratings(ratings, C.USER_IDX, 0, seed=7) is ratings


def test_caps_apply_only_above_the_work_budget(ratings, cfg):
    """Pearson stays exact while the co-rating work (Σ over users of ratings²) is within the budget; above it the
    heavy users are down-sampled and the lists say so, with the share of users capped."""
    per_user = pd.Series({u: len(items) for u, items in MATRIX.items()})
    work, heavy = int((per_user ** 2).sum()), int((per_user > 4).sum())
    assert 0 < heavy < len(per_user), "the fixture must have users above and below the cap"
    exact = ncfg(cfg, max_ratings_per_user=4, exact_work_budget=work)  # at the budget: still exact
    plan = neighbour_sampling.plan_sampling(ratings, C.USER_IDX, 4, work)
    assert (plan.work, plan.groups, plan.heavy, plan.sampled) == (work, len(per_user), heavy, False)
    assert plan.work_capped == int((np.minimum(per_user, 4) ** 2).sum())
    uncapped = nbr.neighbour_lists(ratings, "item", ncfg(cfg), k=2)
    assertDataFrameEqual(nbr.neighbour_lists(ratings, "item", exact, k=2), uncapped)
    over = ncfg(cfg, max_ratings_per_user=4, exact_work_budget=work - 1)
    sampled = nbr.neighbour_lists(ratings, "item", over, k=2)
    assert sampled.count() > 0
    flags = [tuple(r) for r in sampled.select(nbr.SAMPLED, nbr.CAPPED_SHARE).distinct().collect()]
    assert flags == [(True, pytest.approx(heavy / len(per_user)))]
    capped_input = neighbour_sampling.cap_ratings(ratings, C.USER_IDX, 4, over.seed)
    assertDataFrameEqual(sampled.drop(nbr.SAMPLED, nbr.CAPPED_SHARE),
                         nbr.neighbour_lists(capped_input, "item", ncfg(cfg), k=2).drop(nbr.SAMPLED, nbr.CAPPED_SHARE))


def test_without_a_configured_cap_the_work_is_brought_within_the_budget(ratings, cfg):
    """max_ratings_per_user = 0: over the budget, the cap is the largest whose work fits it (checked by brute force
    over every cap), and the lists are those of the ratings capped there."""
    per_user = np.array([len(items) for items in MATRIX.values()])
    work = int((per_user ** 2).sum())
    budget = work - 1
    fits = [c for c in range(1, per_user.max() + 1) if (np.minimum(per_user, c) ** 2).sum() <= budget]
    plan = neighbour_sampling.plan_sampling(ratings, C.USER_IDX, 0, budget)
    assert (plan.cap, plan.sampled) == (max(fits), True)
    assert plan.work_capped <= budget < plan.work
    lists = nbr.neighbour_lists(ratings, "item", ncfg(cfg, max_ratings_per_user=0, exact_work_budget=budget), k=2)
    capped_input = neighbour_sampling.cap_ratings(ratings, C.USER_IDX, plan.cap, cfg.neighbours.seed)
    assertDataFrameEqual(lists.drop(nbr.SAMPLED, nbr.CAPPED_SHARE),
                         nbr.neighbour_lists(capped_input, "item", ncfg(cfg), k=2).drop(nbr.SAMPLED, nbr.CAPPED_SHARE))
    assert not neighbour_sampling.plan_sampling(ratings, C.USER_IDX, 0, work).sampled


@pytest.mark.parametrize("budget", [1, 5, 17, 100, 10**9])
def test_budget_cap_is_the_largest_cap_within_budget(budget):
    sizes, counts = np.array([1, 3, 4, 9]), np.array([5, 2, 1, 3])
    work = [int((counts * np.minimum(sizes, c) ** 2).sum()) for c in range(1, 10)]
    want = max([c for c, w in zip(range(1, 10), work, strict=True) if w <= budget], default=1)
    assert neighbour_sampling.budget_cap(sizes, counts, budget) == want


@pytest.mark.parametrize("shrinkage", [0.0, 2.0])
def test_recommend_sums_similarities_of_rated_items(ratings, cfg, shrinkage):
    lists = nbr.neighbour_lists(ratings, "item", ncfg(cfg), k=3)
    got = knn.recommend(ratings, lists, 2, shrinkage).toPandas()
    ref = ref_top_k(ref_sims("item", 2), 3)
    sims = ref_sims("item", 2)
    for u, items in MATRIX.items():
        score: dict[int, float] = {}
        for j in items:
            for i in ref.get(j, []):
                if i not in items and sims[(j, i)][0] > 0:
                    sim, n = sims[(j, i)]
                    score[i] = score.get(i, 0.0) + sim * n / (n + shrinkage)
        want = sorted(score.items(), key=lambda t: (-t[1], t[0]))[:2]
        mine = got[got[C.USER_IDX] == u].sort_values(C.RANK)
        assert list(mine[C.ITEM_IDX]) == [i for i, _ in want], u
        assert np.allclose(mine[C.SCORE], [s for _, s in want])
        assert list(mine[C.RANK]) == list(range(1, len(want) + 1))
    assert len(got) > 0
