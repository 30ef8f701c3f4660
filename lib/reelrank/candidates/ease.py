"""EASE (Steck, 2019): closed-form item-item weights over the binary interactions (:mod:`reelrank.ease`); users
without history, or none of whose items the weights hold, get the popular list."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from pydantic.dataclasses import dataclass as section

from reelrank import columns as C
from reelrank.candidates.base import CandidateSource, SourceSettings, register
from reelrank.settings import SECTION, PositiveFloat, PositiveInt

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from reelrank.config import Config


@section(frozen=True, config=SECTION)
class EaseSettings(SourceSettings):
    lam: PositiveFloat
    """The L2 penalty λ on the item-item weights (Steck 2019 used 500 on ML-20M)."""
    max_items: PositiveInt
    """EASE inverts an items × items matrix (~8 × items² bytes on the driver, float32): a larger catalogue is
    restricted to its this many most-interacted items (logged with the share of pairs they hold); users with none
    of them get the popular list."""
    block_users: PositiveInt
    """Users scored per sparse × dense product (memory: users × items floats)."""


@register
class EaseSource(CandidateSource):
    """x_u·B over each user's items, on the device of ``[train] device``."""

    name = "ease"
    settings_type = EaseSettings
    feature_prefix = "ease"
    refit_budgeted = True
    servable = True

    def __init__(self, settings: EaseSettings, device: str) -> None:
        super().__init__(settings)
        self.lam, self.max_items, self.block_users, self.device = (settings.lam, settings.max_items,
                                                                   settings.block_users, device)
        self._held: DataFrame | None = None
        """Served on other interactions: the users with an item B holds (the rest get the popular list)."""

    @classmethod
    def from_config(cls, cfg: Config) -> EaseSource:
        return cls(cls.settings_in(cfg, EaseSettings), cfg.train.device)

    def fit(self, interactions: DataFrame) -> EaseSource:
        from reelrank import ease

        self.use(interactions)
        self.model = ease.fit_ease(interactions, self.lam, self.max_items, self.device)
        self._held = self._users_with_held_items() if len(self.model.item_ids) >= self.max_items else None
        return self

    def served_on(self, interactions: DataFrame) -> EaseSource:
        """The fitted weights B applied to each user's items in ``interactions`` (x_u·B is how EASE scores any
        user); items B does not hold are left out, and a user none of whose items it holds gets the popular list."""

        served = copy.copy(self)
        served.use(interactions)
        served._held = served._users_with_held_items()
        return served

    def _users_with_held_items(self) -> DataFrame:
        """Users with an item B holds (B may hold only the most-interacted items: ``max_items``)."""
        from pyspark.sql import functions as F

        spark = self._seen.sparkSession
        known = spark.createDataFrame([(int(i),) for i in self.model.item_ids], f"{C.ITEM_IDX} long")
        return self._seen.join(F.broadcast(known), C.ITEM_IDX, "left_semi").select(C.USER_IDX).distinct().cache()

    def warm_users(self) -> DataFrame:
        return self._held if self._held is not None else self._seen.select(C.USER_IDX)

    def recommend_warm(self, users: DataFrame, n: int) -> DataFrame:
        from reelrank import ease

        return ease.recommend_ease(self.model, users, self._seen, n, self.block_users)
