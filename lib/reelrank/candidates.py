"""Candidate sources behind one interface: fit on interactions, recommend each user's top-n unseen items.

Every source (popularity over all time or a recent window, item neighbours, ALS, EASE) returns lists as
``(user_idx, item_idx, score, rank)`` with ranks 1..n, no item the user interacted with in the fitted data,
ties to the smaller item_idx, and the source's popular list for a user without history. The nightly fits each
configured source on the history (labels, evaluation) and on all interactions (tonight's candidates) in one loop;
evaluation iterates over the same registry. The shape follows implicit's ``fit``/``recommend`` and RecTools'
``fit(dataset)``/``recommend(users, k, filter_viewed)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from pyspark.sql import DataFrame

from reelrank import columns as C
from reelrank import ease, factorize, neighbours, popularity
from reelrank.config import ALSConfig, Config, NeighboursConfig


class CandidateSource(ABC):
    """A source of top-n lists: ``fit`` once, then ``recommend`` for any users (seen items are those fitted)."""

    name: str

    @abstractmethod
    def fit(self, interactions: DataFrame) -> CandidateSource:
        """Fit on ``(user_idx, item_idx, rating, ts)``; return self."""

    @abstractmethod
    def recommend(self, users: DataFrame, n: int) -> DataFrame:
        """Top ``n`` unseen items for every ``user_idx`` in ``users`` as ``(user_idx, item_idx, score, rank)``."""

    def tables(self) -> dict[str, DataFrame]:
        """What the fitted source leaves for the warehouse, by table name (neighbour lists, factors)."""
        return {}


class PopularitySource(CandidateSource):
    """Items by distinct users, over all time (``window_days`` 0) or the last ``window_days`` of the data."""

    def __init__(self, name: str, window_days: float = 0.0) -> None:
        self.name, self.window_days = name, window_days

    def fit(self, interactions: DataFrame) -> PopularitySource:
        self._seen = interactions.select(C.USER_IDX, C.ITEM_IDX)
        self._counts = popularity.item_users(interactions, self.window_days)
        return self

    def recommend(self, users: DataFrame, n: int) -> DataFrame:
        return popularity.popular_unseen(self._counts, users.select(C.USER_IDX).distinct(), self._seen, n)


class ItemNeighboursSource(CandidateSource):
    """Item-based top-N over the top-k Pearson item-item lists (Deshpande & Karypis, 2004); a user without
    history gets the popular list, a user whose items have no positive neighbour gets no list."""

    name = "item_neighbours"

    def __init__(self, cfg: NeighboursConfig) -> None:
        self.cfg = cfg

    def fit(self, interactions: DataFrame) -> ItemNeighboursSource:
        self._train = interactions.select(C.USER_IDX, C.ITEM_IDX)
        self._lists = neighbours.neighbour_lists(interactions, "item", self.cfg).cache()
        self._popular = PopularitySource("popular").fit(interactions)
        return self

    def recommend(self, users: DataFrame, n: int) -> DataFrame:
        users = users.select(C.USER_IDX).distinct()
        warm = self._train.join(users, C.USER_IDX, "left_semi")
        recs = neighbours.recommend(warm, self._lists, n, self.cfg.recommend_shrinkage)
        cold = users.join(self._train, C.USER_IDX, "left_anti")
        return recs.unionByName(self._popular.recommend(cold, n))

    def tables(self) -> dict[str, DataFrame]:
        return {"item_neighbours": self._lists}


class ALSSource(CandidateSource):
    """Spark ML ALS top-N, scored in blocks (:func:`reelrank.factorize.recommend_top_n`); users without factors
    get the popular list."""

    name = "als"

    def __init__(self, cfg: ALSConfig) -> None:
        self.cfg = cfg

    def fit(self, interactions: DataFrame) -> ALSSource:
        self._seen = interactions.select(C.USER_IDX, C.ITEM_IDX)
        self.model = factorize.fit_als(interactions, self.cfg)
        return self

    def recommend(self, users: DataFrame, n: int) -> DataFrame:
        return factorize.recommend_top_n(self.model, users, self._seen, n)

    def tables(self) -> dict[str, DataFrame]:
        user_f, item_f = factorize.factor_frames(self.model)
        return {"user_factors": user_f, "item_factors": item_f}


class EaseSource(CandidateSource):
    """EASE (Steck, 2019): closed-form item-item weights over the binary interactions; users without history get
    the popular list."""

    name = "ease"

    def __init__(self, lam: float, max_items: int, block_users: int, device: str) -> None:
        self.lam, self.max_items, self.block_users, self.device = lam, max_items, block_users, device

    def fit(self, interactions: DataFrame) -> EaseSource:
        self._seen = interactions.select(C.USER_IDX, C.ITEM_IDX)
        self.model = ease.fit_ease(interactions, self.lam, self.max_items, self.device)
        return self

    def recommend(self, users: DataFrame, n: int) -> DataFrame:
        return ease.recommend_ease(self.model, users, self._seen, n, self.block_users)


REGISTRY: dict[str, Callable[[Config], CandidateSource]] = {
    "popular": lambda cfg: PopularitySource("popular"),
    "recent_popular": lambda cfg: PopularitySource("recent_popular", cfg.candidates.recent_days),
    "item_neighbours": lambda cfg: ItemNeighboursSource(cfg.neighbours),
    "als": lambda cfg: ALSSource(cfg.als),
    "ease": lambda cfg: EaseSource(cfg.candidates.ease_lambda, cfg.candidates.ease_max_items,
                                   cfg.als.topn_block_users, cfg.train.device),
}
"""Every candidate source by name; ``[candidates] sources`` picks which the nightly fits."""


def make(name: str, cfg: Config) -> CandidateSource:
    """The unfitted source ``name`` configured from ``cfg``."""
    return REGISTRY[name](cfg)


def list_length(cfg: Config, name: str) -> int:
    """How many candidates source ``name`` proposes per user (``[candidates] <name>``)."""
    return int(getattr(cfg.candidates, name))
