"""A deterministic synthetic entertainment catalogue with a known, learnable structure.

Items have Zipf-like popularity, 1-3 genres and a release year; users have long-tailed activity,
latent taste factors and genre preferences. Who rates what follows popularity and genre taste;
the star given follows biases + latent factors + genre taste + noise, so a recommender can beat
popularity on it. Everything is vectorised numpy driven by one seeded generator: the same config
gives byte-identical frames.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pyarrow as pa

from reelrank import columns as C
from reelrank.inputs.settings import SyntheticConfig

log = logging.getLogger(__name__)

GENRE_NAMES = (
    "Drama", "Comedy", "Action", "Thriller", "Romance", "Adventure", "Crime", "Sci-Fi", "Horror",
    "Fantasy", "Children's", "Mystery", "Animation", "Documentary", "War", "Musical", "Western", "Film-Noir",
)  # fmt: skip
"""Genre names, most common first; ``SyntheticConfig.genres`` takes the first n."""

# Shape of the generative model (not settings: changing them changes what "synthetic" means).
GLOBAL_MEAN = 3.4
"""Mean star before rounding (MovieLens is about 3.5)."""
USER_BIAS_SD = 0.35
ITEM_BIAS_SD = 0.35
POPULARITY_QUALITY = 0.15
"""Popular items are rated slightly higher: item bias gains this much per sd of log popularity."""
LATENT_SD = 0.6
"""Standard deviation of the user-item latent interaction term, in stars."""
GENRE_TASTE_SD = 0.35
"""Standard deviation of the user-genre taste term, in stars."""
ACTIVITY_SIGMA = 0.9
"""Log-normal sigma of per-user activity: the long tail of heavy raters."""
GENRE_COUNT_P = (0.5, 0.35, 0.15)
"""Probability that an item has 1, 2 or 3 genres."""
GENRE_FREQ_EXPONENT = 0.7
"""Genre g (0-based) is common in proportion to (g + 1) ** -exponent."""
EXPLORE_SHARE = 0.35
"""Share of picks made by overall popularity; the rest are made through the user's genre taste."""
TASTE_SHARPNESS = 1.5
"""How strongly genre preference steers which items a user picks."""
CATALOGUE_AGE_YEARS = 12.0
"""Mean age (years before the window) of back-catalogue releases."""
OLDEST_YEAR = 1920
RELEASE_DECAY_DAYS = 45.0
"""Ratings of a new release arrive on average this many days after it."""
MAX_DEDUP_ROUNDS = 4
"""Rounds of sampling with replacement + de-duplication before the exact fallback."""
CHUNK_ELEMENTS = 1 << 22
"""Largest temporary matrix (rows x columns) built at once."""

SECONDS_PER_DAY = 86400
ID_WIDTH = 5


def generate(cfg: SyntheticConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(ratings, items)`` for ``cfg``: exactly ``cfg.ratings`` unique (user, item) ratings.

    ratings: user_id, item_id (strings ``u00042``/``i00017``), rating (float, whole stars 1-5),
    timestamp (int64 unix seconds in ``[start_ts, start_ts + days * 86400)``), sorted by time.
    items: item_id, title, genres (list of 1-3 names), year.
    """
    _check(cfg)
    rng = np.random.default_rng(cfg.seed)
    n_users, n_items, n_genres = cfg.users, cfg.items, cfg.genres

    # Items: popularity, genres, release.
    pop = (rng.permutation(n_items) + 1.0) ** -cfg.popularity_exponent
    pop /= pop.sum()
    genre_freq = (np.arange(n_genres) + 1.0) ** -GENRE_FREQ_EXPONENT
    n_item_genres = rng.choice(np.arange(1, 4), size=n_items, p=GENRE_COUNT_P)
    n_item_genres = np.minimum(n_item_genres, n_genres)
    genre_order = np.argsort(-(np.log(genre_freq) + rng.gumbel(size=(n_items, n_genres))), axis=1)[:, :3]
    member = np.zeros((n_items, n_genres), dtype=bool)
    for k in range(3):
        rows = np.flatnonzero(n_item_genres > k)
        member[rows, genre_order[rows, k]] = True
    is_new = rng.random(n_items) < cfg.new_item_fraction
    release_day = np.where(is_new, rng.random(n_items) * cfg.days, -np.inf)
    start_year = int(np.datetime64(cfg.start_ts, "s").astype("datetime64[Y]").astype(int)) + 1970
    old_year = start_year - 1 - np.floor(rng.exponential(CATALOGUE_AGE_YEARS, n_items))
    new_year = (
        (cfg.start_ts + np.nan_to_num(release_day, neginf=0.0) * SECONDS_PER_DAY)
        .astype("datetime64[s]")
        .astype("datetime64[Y]")
        .astype(np.int64)
        + 1970
    )
    year = np.where(is_new, new_year, np.maximum(old_year, OLDEST_YEAR)).astype(np.int64)

    # Latent structure shared by choice and rating.
    user_bias = rng.normal(0.0, USER_BIAS_SD, n_users)
    log_pop = np.log(pop)
    item_bias = rng.normal(0.0, ITEM_BIAS_SD, n_items) + POPULARITY_QUALITY * (log_pop - log_pop.mean()) / log_pop.std()
    user_f = rng.normal(size=(n_users, cfg.latent_dim))
    item_f = rng.normal(size=(n_items, cfg.latent_dim))
    genre_pref = rng.normal(size=(n_users, n_genres))

    # Who rates how many, and what.
    counts = _activity(rng, n_users, n_items, cfg.ratings, cfg.min_user_ratings)
    mixture = _Mixture.build(pop, member, genre_pref)
    users, items = _sample_pairs(rng, counts, mixture, n_items)

    # Stars.
    n = users.size
    score = np.empty(n)
    item_genre_norm = 1.0 / np.sqrt(member.sum(axis=1))
    step = max(1, CHUNK_ELEMENTS // max(cfg.latent_dim, n_genres))
    for lo in range(0, n, step):
        u, i = users[lo : lo + step], items[lo : lo + step]
        latent = np.einsum("ij,ij->i", user_f[u], item_f[i]) / math.sqrt(cfg.latent_dim)
        taste = np.einsum("ij,ij->i", genre_pref[u], member[i]) * item_genre_norm[i]
        score[lo : lo + step] = user_bias[u] + item_bias[i] + LATENT_SD * latent + GENRE_TASTE_SD * taste
    score += GLOBAL_MEAN + rng.normal(0.0, cfg.rating_noise, n)
    rating = np.clip(np.rint(score), 1.0, 5.0)

    # Times: within the user's active span, and never before the item's release.
    user_start = rng.random(n_users) * cfg.days
    user_span = np.minimum(rng.exponential(cfg.days / 3.0, n_users), cfg.days - user_start)
    day = user_start[users] + user_span[users] * rng.random(n)
    rel = release_day[items]
    after = rel + rng.exponential(RELEASE_DECAY_DAYS, n)
    day = np.where(np.isfinite(rel), np.maximum(day, after), day)
    late = np.flatnonzero(day >= cfg.days)  # only new releases can spill past the window
    day[late] = rel[late] + (cfg.days - rel[late]) * rng.random(late.size)
    horizon = cfg.days * SECONDS_PER_DAY
    ts = cfg.start_ts + np.clip(np.floor(day * SECONDS_PER_DAY).astype(np.int64), 0, horizon - 1)

    order = np.lexsort((items, users, ts))
    ratings = pd.DataFrame(
        {
            C.USER: _ids("u", users[order], n_users),
            C.ITEM: _ids("i", items[order], n_items),
            C.RATING: rating[order],
            "timestamp": ts[order],
        }
    )
    items_df = pd.DataFrame(
        {
            C.ITEM: _ids("i", np.arange(n_items), n_items),
            C.TITLE: _titles(rng, year),
            C.GENRES: [[GENRE_NAMES[g] for g in genre_order[i, : n_item_genres[i]]] for i in range(n_items)],
            C.YEAR: year,
        }
    )
    assert len(ratings) == cfg.ratings, (len(ratings), cfg.ratings)
    log.info("synthetic catalogue: %d ratings, %d users, %d items (seed %d)", n, n_users, n_items, cfg.seed)
    return ratings, items_df


def _check(cfg: SyntheticConfig) -> None:
    if not 1 <= cfg.genres <= len(GENRE_NAMES):
        raise ValueError(f"synthetic.genres must be in [1, {len(GENRE_NAMES)}], got {cfg.genres}")
    if cfg.items < cfg.min_user_ratings:
        raise ValueError(f"synthetic.items ({cfg.items}) < synthetic.min_user_ratings ({cfg.min_user_ratings})")
    if not cfg.users * cfg.min_user_ratings <= cfg.ratings <= cfg.users * cfg.items:
        raise ValueError(
            f"synthetic.ratings must be in [users * min_user_ratings, users * items] = "
            f"[{cfg.users * cfg.min_user_ratings}, {cfg.users * cfg.items}], got {cfg.ratings}"
        )
    if cfg.days < 1 or cfg.latent_dim < 1:
        raise ValueError("synthetic.days and synthetic.latent_dim must be >= 1")


def _activity(rng: np.random.Generator, n_users: int, cap: int, total: int, minimum: int) -> np.ndarray:
    """Long-tailed ratings per user: each in [minimum, cap], summing exactly to ``total``."""
    weight = rng.lognormal(0.0, ACTIVITY_SIGMA, n_users)
    counts = np.full(n_users, float(minimum))
    free = np.ones(n_users, dtype=bool)
    while True:  # water-filling: spread what is left over the users below the cap
        left = total - counts[~free].sum() - minimum * free.sum()
        target = minimum + left * weight / weight[free].sum()
        over = free & (target > cap)
        if not over.any():
            counts[free] = target[free]
            break
        counts[over] = cap
        free &= ~over
    base = np.floor(counts).astype(np.int64)
    short = total - int(base.sum())
    if short:  # largest remainders, among users still below the cap
        frac = np.where(base < cap, counts - base, -1.0)
        base[np.argsort(-frac, kind="stable")[:short]] += 1
    assert base.sum() == total and base.min() >= minimum and base.max() <= cap
    return base


class _Mixture:
    """Per-user item choice: a mixture of overall popularity and popularity within each genre.

    Component 0 is every item by popularity; component g + 1 is genre g's items by popularity. A
    user's component weights follow her genre taste. Draws are inverse-CDF look-ups in flattened,
    offset CDFs, so one ``searchsorted`` serves all users and components at once.
    """

    def __init__(self, comp_cdf: np.ndarray, item_cdf: np.ndarray, item_of: np.ndarray, comp_end: np.ndarray,
                 comp_prob: np.ndarray, comp_item_prob: np.ndarray) -> None:  # fmt: skip
        self.comp_cdf, self.item_cdf, self.item_of, self.comp_end = comp_cdf, item_cdf, item_of, comp_end
        self.comp_prob, self.comp_item_prob = comp_prob, comp_item_prob

    @classmethod
    def build(cls, pop: np.ndarray, member: np.ndarray, genre_pref: np.ndarray) -> _Mixture:
        n_users, n_genres = genre_pref.shape
        weights = np.vstack([pop, member.T * pop])  # (components, items)
        mass = weights.sum(axis=1)
        comp_item_prob = weights / np.where(mass > 0, mass, 1.0)[:, None]
        with np.errstate(divide="ignore"):
            logits = TASTE_SHARPNESS * genre_pref + np.log(mass[1:] / mass[1:].sum())
        logits -= logits.max(axis=1, keepdims=True)
        taste = np.exp(logits)
        taste /= taste.sum(axis=1, keepdims=True)
        comp_prob = np.hstack([np.full((n_users, 1), EXPLORE_SHARE), (1.0 - EXPLORE_SHARE) * taste])
        cum = np.cumsum(comp_prob, axis=1)
        cum[:, -1] = 1.0
        comp_cdf = (cum + np.arange(n_users)[:, None]).ravel()
        item_cdf, item_of, comp_end = [], [], []
        for k, w in enumerate(weights):
            idx = np.flatnonzero(w > 0)
            c = np.cumsum(w[idx]) / w[idx].sum() if idx.size else np.empty(0)
            if idx.size:
                c[-1] = 1.0
            item_cdf.append(c + k)
            item_of.append(idx)
            comp_end.append(sum(a.size for a in item_of))
        return cls(comp_cdf, np.concatenate(item_cdf), np.concatenate(item_of), np.asarray(comp_end),
                   comp_prob, comp_item_prob)  # fmt: skip

    def draw(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        """One item per entry of ``users`` (with replacement), from each user's mixture."""
        n_comp = self.comp_prob.shape[1]
        comp = np.searchsorted(self.comp_cdf, users + rng.random(users.size), side="right") - users * n_comp
        comp = np.clip(comp, 0, n_comp - 1)
        j = np.searchsorted(self.item_cdf, comp + rng.random(users.size), side="right")
        j = np.minimum(j, self.comp_end[comp] - 1)
        return self.item_of[j]


def _sample_pairs(
    rng: np.random.Generator, counts: np.ndarray, mixture: _Mixture, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """``counts[u]`` distinct items per user u, sorted by (user, item).

    Successive sampling: draw with replacement, keep the first occurrence of each item in draw
    order (that is sampling without replacement, weighted), top up users left short, and finish the
    few heavy users still short with an exact Gumbel-top-k over their whole row.
    """
    n_users = counts.size
    need = counts.astype(np.int64).copy()
    kept: list[np.ndarray] = []
    oversample = 1.25
    for _ in range(MAX_DEDUP_ROUNDS):
        short = np.flatnonzero(need > 0)
        if not short.size:
            break
        users = np.repeat(short, np.ceil(need[short] * oversample).astype(np.int64) + 1)
        keys = users * n_items + mixture.draw(rng, users)
        if kept:
            have = np.concatenate(kept)
            have = have[need[have // n_items] > 0]
            keys = keys[~np.isin(keys, have)]
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]  # first occurrences, still grouped by user in draw order
        u = keys // n_items
        rank = np.arange(keys.size) - np.searchsorted(u, u, side="left")
        take = rank < need[u]
        kept.append(keys[take])
        need -= np.bincount(u[take], minlength=n_users)
        oversample *= 2.0
    short = np.flatnonzero(need > 0)
    if short.size:
        kept.append(_gumbel_top_up(rng, short, need[short], np.concatenate(kept), mixture, n_items))
        log.debug("exact top-up for %d heavy users", short.size)
    keys = np.sort(np.concatenate(kept))
    users, items = keys // n_items, keys % n_items
    assert np.array_equal(np.bincount(users, minlength=n_users), counts), "per-user counts"
    assert keys.size == np.unique(keys).size, "duplicate (user, item)"
    return users, items


def _gumbel_top_up(rng: np.random.Generator, users: np.ndarray, need: np.ndarray, have: np.ndarray,
                   mixture: _Mixture, n_items: int) -> np.ndarray:  # fmt: skip
    """Exact weighted sampling without replacement (Gumbel-top-k) of ``need`` new items per user."""
    have = have[np.isin(have // n_items, users)]
    out = []
    step = max(1, CHUNK_ELEMENTS // n_items)
    for lo in range(0, users.size, step):
        u = users[lo : lo + step]
        with np.errstate(divide="ignore"):
            key = np.log(mixture.comp_prob[u] @ mixture.comp_item_prob) + rng.gumbel(size=(u.size, n_items))
        mine = have[np.isin(have // n_items, u)]
        row = np.searchsorted(u, mine // n_items)
        key[row, mine % n_items] = -np.inf
        best = np.argsort(-key, axis=1, kind="stable")
        for r, (uu, k) in enumerate(zip(u, need[lo : lo + step], strict=False)):
            out.append(uu * n_items + best[r, :k])
    return np.concatenate(out)


def _ids(prefix: str, index: np.ndarray, n: int) -> pd.Series:
    """``u00042``-style ids as a compact Arrow-backed string column (no per-row Python objects)."""
    width = max(ID_WIDTH, len(str(n - 1)))
    names = pa.array([f"{prefix}{k:0{width}d}" for k in range(n)], type=pa.string())
    values = pa.DictionaryArray.from_arrays(pa.array(index.astype(np.int32)), names).dictionary_decode()
    return pd.Series(pd.arrays.ArrowStringArray(values))


_ADJ = ("Silent", "Broken", "Golden", "Last", "Hidden", "Crimson", "Lonely", "Wild", "Electric", "Midnight", "Frozen",
        "Lost", "Burning", "Secret", "Distant", "Savage", "Gentle", "Iron", "Velvet", "Forgotten")  # fmt: skip
_NOUN = ("Harbor", "Empire", "Garden", "Signal", "Horizon", "Witness", "Kingdom", "Voyage", "Promise", "River",
         "Machine", "Summer", "Shadow", "Letter", "Frontier", "Dancer", "Orchard", "Station", "Verdict",
         "Island")  # fmt: skip


def _titles(rng: np.random.Generator, year: np.ndarray) -> list[str]:
    a = rng.integers(0, len(_ADJ), year.size)
    b = rng.integers(0, len(_NOUN), year.size)
    the = rng.random(year.size) < 0.4
    return [f"{'The ' if t else ''}{_ADJ[x]} {_NOUN[y]} ({yr})" for t, x, y, yr in zip(the, a, b, year, strict=True)]
