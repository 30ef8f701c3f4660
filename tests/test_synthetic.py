"""The synthetic catalogue: deterministic, exact size, long-tailed, and learnable."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from reelrank.inputs.synthetic import GENRE_NAMES, generate


@pytest.fixture(scope="module")
def small(cfg):
    return cfg.synthetic


@pytest.fixture(scope="module")
def medium(cfg):
    """Large enough for distribution checks, still well under a second to generate."""
    return dataclasses.replace(cfg.synthetic, users=2000, items=1000, ratings=60000)


@pytest.fixture(scope="module")
def medium_frames(medium):
    return generate(medium)


def test_same_seed_is_byte_identical(small):
    r1, i1 = generate(small)
    r2, i2 = generate(small)
    pd.testing.assert_frame_equal(r1, r2)
    pd.testing.assert_frame_equal(i1, i2)
    assert pd.util.hash_pandas_object(r1).to_numpy().tobytes() == pd.util.hash_pandas_object(r2).to_numpy().tobytes()
    assert i1.to_json() == i2.to_json()


def test_different_seed_differs(small):
    r1, i1 = generate(small)
    r2, i2 = generate(dataclasses.replace(small, seed=small.seed + 1))
    assert not r1.equals(r2)
    assert not i1[["genres", "year"]].equals(i2[["genres", "year"]])


def test_sizes_types_and_unique_pairs(small):
    ratings, items = generate(small)
    assert len(ratings) == small.ratings
    assert list(ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert list(items.columns) == ["item_id", "title", "genres", "year"]
    assert len(items) == small.items and items.item_id.is_unique
    assert ratings.user_id.nunique() == small.users
    assert not ratings.duplicated(["user_id", "item_id"]).any()
    assert set(ratings.item_id) <= set(items.item_id)
    assert ratings.user_id.str.fullmatch(r"u\d{5}").all() and ratings.item_id.str.fullmatch(r"i\d{5}").all()
    assert set(ratings.rating.unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ratings.rating.dtype == np.float64 and ratings.timestamp.dtype == np.int64
    lo, hi = small.start_ts, small.start_ts + small.days * 86400
    assert ratings.timestamp.between(lo, hi - 1).all()


def test_genres_titles_years(medium_frames, medium):
    ratings, items = medium_frames
    allowed = set(GENRE_NAMES[: medium.genres])
    assert items.genres.map(lambda g: 1 <= len(g) <= 3 and len(set(g)) == len(g) and set(g) <= allowed).all()
    assert items.title.str.len().gt(0).all()
    assert items.year.between(1900, 2030).all()
    # no rating before the item's release year
    year_of_rating = pd.to_datetime(ratings.timestamp, unit="s").dt.year
    release = ratings.item_id.map(items.set_index("item_id").year)
    assert (year_of_rating >= release).all()
    # some items are released inside the window, most are back catalogue
    start_year = pd.Timestamp(medium.start_ts, unit="s").year
    new = (items.year >= start_year).mean()
    assert 0.1 < new < 0.5


def test_long_tail_popularity_and_activity(medium_frames, medium):
    ratings, items = medium_frames
    per_item = ratings.item_id.value_counts()
    top = per_item.iloc[: len(items) // 10].sum() / len(ratings)
    assert top > 0.4, top
    per_user = ratings.user_id.value_counts()
    assert per_user.min() >= medium.min_user_ratings
    assert per_user.max() > 5 * per_user.median()  # heavy raters exist


def test_ratings_are_predictable_from_user_and_item(medium_frames):
    """A user-mean + item-mean baseline fit on 80% beats the global mean on the held-out 20%."""
    ratings, _ = medium_frames
    rng = np.random.default_rng(0)
    test_mask = rng.random(len(ratings)) < 0.2
    train, test = ratings[~test_mask], ratings[test_mask]
    mu = train.rating.mean()
    reg = 5.0
    g_u = train.groupby("user_id").rating.agg(["sum", "count"])
    b_u = (g_u["sum"] - mu * g_u["count"]) / (g_u["count"] + reg)
    resid = train.rating - mu - train.user_id.map(b_u)
    g_i = resid.groupby(train.item_id).agg(["sum", "count"])
    b_i = g_i["sum"] / (g_i["count"] + reg)
    pred = mu + test.user_id.map(b_u).fillna(0) + test.item_id.map(b_i).fillna(0)
    rmse_base = np.sqrt(((test.rating - pred) ** 2).mean())
    rmse_global = np.sqrt(((test.rating - mu) ** 2).mean())
    assert rmse_base < 0.95 * rmse_global, (rmse_base, rmse_global)


def test_latent_structure_beyond_biases(medium_frames):
    """After removing user and item means, ratings of popular item pairs still co-vary across users
    (taste factors), far more than when the same residuals are shuffled."""
    ratings, _ = medium_frames
    r = ratings.rating - ratings.groupby("user_id").rating.transform("mean")
    r = r - r.groupby(ratings.item_id).transform("mean")
    top = ratings.item_id.value_counts().index[:30]

    def mean_sq_corr(values: pd.Series) -> float:
        m = pd.DataFrame({"u": ratings.user_id, "i": ratings.item_id, "r": values})
        corr = m[m.i.isin(top)].pivot(index="u", columns="i", values="r").corr(min_periods=30).to_numpy()
        return float(np.nanmean(corr[~np.eye(len(corr), dtype=bool)] ** 2))

    shuffled = pd.Series(np.random.default_rng(0).permutation(r.to_numpy()), index=r.index)
    real, null = mean_sq_corr(r), mean_sq_corr(shuffled)
    assert real > 2 * null, (real, null)


@pytest.mark.parametrize(
    "change",
    [{"ratings": 10}, {"ratings": 200 * 150 + 1}, {"genres": 19}, {"items": 3}],
)
def test_impossible_configs_are_rejected(small, change):
    with pytest.raises(ValueError, match="synthetic"):
        generate(dataclasses.replace(small, **change))
