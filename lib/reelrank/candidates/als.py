"""ALS: Spark ML ALS top-N scored in blocks (:func:`reelrank.factorize.recommend_top_n`); users without factors get
the popular list. Implicit ALS can serve later interactions by folding each user in against its item factors."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from reelrank import columns as C
from reelrank.candidates.base import CandidateSource, Emitted, SourceSettings, register

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from reelrank.config import ALSConfig, Config


@register
class ALSSource(CandidateSource):
    """The ``[als]`` model's top-N unseen items per user."""

    name = "als"
    feature_prefix = "als"
    refit_budgeted = True
    servable = True
    servable_when = (lambda c: c.als.implicit and not c.als.nonnegative,
                     "als.implicit is true and als.nonnegative false (only that ALS has a closed-form fold-in)")
    emits = (
        Emitted("user_factors", "ALS user factors fitted on all interactions (folded in against the history fit's "
                "item factors when ALS is served from it: [candidates] refit_max_interactions)", "user", "vectors"),
        Emitted("item_factors", "ALS item factors fitted on all interactions (the history fit's when ALS is served "
                "from it: [candidates] refit_max_interactions)", "item", "vectors"),
    )

    def __init__(self, settings: SourceSettings, cfg: ALSConfig) -> None:
        super().__init__(settings)
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg: Config) -> ALSSource:
        return cls(cfg.candidates[cls.name], cfg.als)

    def fit(self, interactions: DataFrame) -> ALSSource:
        from reelrank import factorize

        self.use(interactions)
        self.model = factorize.fit_als(interactions, self.cfg)
        return self

    def served_on(self, interactions: DataFrame) -> ALSSource | None:
        """Implicit ALS: the fitted item factors, each user folded in from ``interactions``
        (:func:`reelrank.factorize.fold_in`); explicit ALS with biases or non-negative ALS refits (None)."""
        from reelrank import factorize

        if not self.cfg.implicit or self.cfg.nonnegative:
            return None
        served = copy.copy(self)
        served.use(interactions)
        served.model = factorize.fold_in(self.model, interactions, self.cfg)
        return served

    def warm_users(self) -> DataFrame:
        """Users with factors (a user none of whose items has an item factor gets none when folded in)."""
        return self.model.user_factors.select(C.USER_IDX)

    def recommend_warm(self, users: DataFrame, n: int) -> DataFrame:
        from reelrank import factorize

        return factorize.recommend_top_n(self.model, users, self._seen, n)

    def tables(self) -> dict[str, DataFrame]:
        from reelrank import factorize

        user_f, item_f = factorize.factor_frames(self.model)
        return {"user_factors": user_f, "item_factors": item_f}
