"""Item neighbours: item-based top-N over the top-k Pearson item-item lists (Deshpande & Karypis, 2004).

A user whose items have no positive neighbour gets no list; a user without history gets the popular list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic.dataclasses import dataclass as section

from reelrank import columns as C
from reelrank.candidates.base import CandidateSource, Emitted, SourceSettings, register
from reelrank.settings import SECTION, PositiveInt

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from reelrank.config import Config, NeighboursConfig


@section(frozen=True, config=SECTION)
class ItemNeighboursSettings(SourceSettings):
    block_users: PositiveInt
    """Users scored per sparse product (memory: users × items floats)."""


@register
class ItemNeighboursSource(CandidateSource):
    """The item-item lists of ``[neighbours]``, each user's items' neighbours summed (shrunk by support)."""

    name = "item_neighbours"
    settings_type = ItemNeighboursSettings
    feature_prefix = "nb"
    emits = (Emitted("item_neighbours", "top-k Pearson item-item neighbours on all interactions", "item",
                     "neighbours", kept_from_history="item_nb_history",
                     kept_doc="item-item neighbour lists fitted on the history (rating predictions)"),)

    def __init__(self, settings: ItemNeighboursSettings, cfg: NeighboursConfig) -> None:
        super().__init__(settings)
        self.cfg, self.block_users = cfg, settings.block_users

    @classmethod
    def from_config(cls, cfg: Config) -> ItemNeighboursSource:
        return cls(cls.settings_in(cfg, ItemNeighboursSettings), cfg.neighbours)

    def fit(self, interactions: DataFrame) -> ItemNeighboursSource:
        from reelrank import neighbours

        self.use(interactions)
        self._lists = neighbours.neighbour_lists(interactions, "item", self.cfg).cache()
        return self

    def recommend_warm(self, users: DataFrame, n: int) -> DataFrame:
        from reelrank import knn

        history = self._seen.join(users, C.USER_IDX, "left_semi")
        return knn.recommend(history, self._lists, n, self.cfg.recommend_shrinkage, self.block_users)

    def tables(self) -> dict[str, DataFrame]:
        return {"item_neighbours": self._lists}
