"""Popularity over all time (``popular``) and over a recent window (``recent_popular``): items by distinct users.

The simplest strong baseline; every user gets the ranking walked past their own items (no warm path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic.dataclasses import dataclass as section

from reelrank import columns as C
from reelrank.candidates.base import CandidateSource, SourceSettings, register
from reelrank.settings import SECTION, PositiveFloat

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from reelrank.config import Config


@register
class PopularitySource(CandidateSource):
    """Items by distinct users over all the fitted interactions; the ranker sees only whether it proposed an item."""

    name = "popular"
    feature_prefix: ClassVar[str | None] = "pop"
    membership_only = True

    def __init__(self, settings: SourceSettings, window_days: float = 0.0) -> None:
        super().__init__(settings)
        self.window_days = window_days

    def fit(self, interactions: DataFrame) -> PopularitySource:
        from reelrank.popularity import item_users

        self._seen = interactions.select(C.USER_IDX, C.ITEM_IDX)
        self._popular = item_users(interactions, self.window_days)
        return self

    def warm_users(self) -> None:
        return None


@section(frozen=True, config=SECTION)
class RecentPopularSettings(SourceSettings):
    days: PositiveFloat
    """The window, in days before the latest interaction."""


@register
class RecentPopularSource(PopularitySource):
    """Items by distinct users over the last ``[candidates.recent_popular] days`` of the fitted interactions."""

    name = "recent_popular"
    settings_type = RecentPopularSettings
    feature_prefix = None
    membership_only = False

    @classmethod
    def from_config(cls, cfg: Config) -> RecentPopularSource:
        settings = cls.settings_in(cfg, RecentPopularSettings)
        return cls(settings, settings.days)
