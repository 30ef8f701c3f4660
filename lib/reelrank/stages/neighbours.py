"""The neighbours stage: top-k user-user neighbours on all ratings (Pearson, or binary cosine for implicit
feedback: :func:`reelrank.neighbours.similarity_measure`)."""

from __future__ import annotations

import dataclasses
import logging

from pyspark.sql import DataFrame

from reelrank import columns as C
from reelrank import neighbours
from reelrank.catalog import Stage
from reelrank.config import Config
from reelrank.ids import neighbour_ids
from reelrank.runstate import Result, StageIO

log = logging.getLogger("reelrank")


def run(io: StageIO, cfg: Config, *, interactions: DataFrame, user_index: DataFrame) -> Result:
    """Top-k user-user neighbours on all ratings (item-item lists come from the item-neighbour source)."""
    measure = neighbours.similarity_measure(interactions, "user", cfg.neighbours)
    nb = dataclasses.replace(cfg.neighbours, similarity=measure)
    user_nb = neighbours.neighbour_lists(interactions, "user", nb)
    user_nb = io.write("user_neighbours", neighbour_ids(user_nb, user_index, C.USER, C.USER_IDX))
    first = user_nb.select(neighbours.SAMPLED, neighbours.CAPPED_SHARE).first()
    how = (f"on down-sampled ratings ({first[1]:.1%} of the items capped: co-rating work over exact_work_budget)"
           if first is not None and first[0] else "exact")
    pairs = user_nb.count()
    if pairs == 0:  # never in silence (issue 30)
        log.warning("neighbours: no user-user pair has %d co-rated items with %s similarity ([neighbours] "
                    "min_support): user_neighbours is empty", nb.min_support, measure)
    return Result({"user_neighbours": user_nb}, pairs, f"top-{nb.top_k} {measure} user-user, {how}")


STAGE = Stage("neighbours", run, inputs=("interactions", "user_index"), outputs=("user_neighbours",),
              counts="neighbour pairs")
