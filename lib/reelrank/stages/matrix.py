"""The matrix stage: stable indexes, indexed interactions, statistics and the holdout split."""

from __future__ import annotations

from pyspark.sql import DataFrame

from reelrank import columns as C
from reelrank import matrix, splits
from reelrank.catalog import Stage
from reelrank.config import Config
from reelrank.runstate import Result, StageIO
from reelrank.stages.shared import latest, ratings


def run(io: StageIO, cfg: Config, *, accepted: DataFrame, raw_items: DataFrame,
        published_user_index: DataFrame | None, published_item_index: DataFrame | None) -> Result:
    """Stable indexes (extending the last published ones), indexed interactions, statistics, the holdout split."""
    user_index = io.write("user_index", matrix.extend_index(accepted, latest(published_user_index), C.USER,
                                                            C.USER_IDX))
    item_index = io.write("item_index", matrix.extend_index(accepted, latest(published_item_index), C.ITEM,
                                                            C.ITEM_IDX))
    inter = io.write("interactions", matrix.index_interactions(accepted, user_index, item_index))
    ev = cfg.evaluate
    history, holdout = splits.holdout_split(ratings(inter), ev)
    out = {"user_index": user_index, "item_index": item_index, "interactions": inter,
           "items": io.write("items", matrix.items_frame(raw_items, item_index)),
           "user_stats": io.write("user_stats", matrix.entity_stats(inter, C.USER, C.USER_IDX)),
           "item_stats": io.write("item_stats", matrix.entity_stats(inter, C.ITEM, C.ITEM_IDX)),
           "history": io.write("history", history), "holdout": io.write("holdout", holdout)}
    return Result(out, inter.count(), f"{user_index.count():,} users × {item_index.count():,} items, "
                  f"holdout {out['holdout'].count():,}")


STAGE = Stage(
    "matrix", run,
    inputs=("accepted", "raw_items"),
    outputs=("user_index", "item_index", "interactions", "items", "user_stats", "item_stats", "history", "holdout"),
    published=("user_index", "item_index"),
    counts="interactions",
)
