"""Id joins: tables indexed by ``*_idx`` given back their original ids before they are published."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank import neighbours


def with_ids(factors: DataFrame, index: DataFrame, idx_col: str, run_id: str) -> DataFrame:
    """Factors with original ids and the model version they came from."""
    return factors.join(index, idx_col).select("*", F.lit(run_id).alias(C.MODEL_VERSION))


def neighbour_ids(nb: DataFrame, index: DataFrame, id_col: str, idx_col: str) -> DataFrame:
    """Neighbour lists with original ids next to the indexes."""
    ids = index.select(F.col(idx_col).alias("_idx"), F.col(id_col).alias("_id"))
    return (
        nb.join(F.broadcast(ids.withColumnRenamed("_id", "entity_id")), F.col("entity_idx") == F.col("_idx"))
        .drop("_idx")
        .join(F.broadcast(ids.withColumnRenamed("_id", "neighbour_id")), F.col("neighbour_idx") == F.col("_idx"))
        .select("entity_id", "neighbour_id", "similarity", "support", C.RANK, "entity_idx", "neighbour_idx",
                neighbours.SAMPLED, neighbours.CAPPED_SHARE)
    )
