"""The neighbours stage: top-k Pearson user-user neighbours on all ratings."""

from __future__ import annotations

from pyspark.sql import DataFrame

from reelrank import columns as C
from reelrank import neighbours
from reelrank.catalog import Stage
from reelrank.config import Config
from reelrank.ids import neighbour_ids
from reelrank.runstate import Result, StageIO


def run(io: StageIO, cfg: Config, *, interactions: DataFrame, user_index: DataFrame) -> Result:
    """Top-k Pearson user-user neighbours on all ratings (item-item lists come from the item-neighbour source)."""
    nb = cfg.neighbours
    user_nb = neighbours.neighbour_lists(interactions, "user", nb)
    user_nb = io.write("user_neighbours", neighbour_ids(user_nb, user_index, C.USER, C.USER_IDX))
    first = user_nb.select(neighbours.SAMPLED, neighbours.CAPPED_SHARE).first()
    how = (f"on down-sampled ratings ({first[1]:.1%} of the items capped: co-rating work over exact_work_budget)"
           if first is not None and first[0] else "exact")
    return Result({"user_neighbours": user_nb}, user_nb.count(), f"top-{nb.top_k} Pearson user-user, {how}")


STAGE = Stage("neighbours", run, inputs=("interactions", "user_index"), outputs=("user_neighbours",),
              counts="neighbour pairs")
