"""Batch scoring in Spark: the model's bytes broadcast once, candidates scored in Arrow batches, top-N per user."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reelrank import columns as C

log = logging.getLogger(__name__)


def score_candidates(candidates: DataFrame, model_bytes: bytes) -> DataFrame:
    """Each candidate row's ``(user_idx, item_idx, score)``: the serialized model scores each partition's rows in
    pandas batches. Only the keys and the score come back from Python (the features would double the Arrow
    traffic; issue 15)."""
    spark = candidates.sparkSession
    weights = spark.sparkContext.broadcast(model_bytes)
    keys = [candidates.schema[C.USER_IDX], candidates.schema[C.ITEM_IDX]]
    schema = T.StructType(keys + [T.StructField(C.SCORE, T.DoubleType(), False)])

    def score_batches(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        from reelrank import faults
        from reelrank.models import from_bytes

        faults.task_hit("score.task")
        torch.set_num_threads(1)  # one thread per Spark task: the cores are already shared out by Spark
        model = from_bytes(weights.value)
        for pdf in batches:
            yield pd.DataFrame({C.USER_IDX: pdf[C.USER_IDX], C.ITEM_IDX: pdf[C.ITEM_IDX],
                                C.SCORE: model.score_frame(pdf).astype("float64")})

    return candidates.mapInPandas(score_batches, schema)


def top_n(scored: DataFrame, n: int, score_col: str = C.SCORE) -> DataFrame:
    """The ``n`` best-scored rows per user with ranks 1..n (ties broken by item index)."""
    w = Window.partitionBy(C.USER_IDX).orderBy(F.col(score_col).desc(), F.col(C.ITEM_IDX))
    return (
        scored.withColumn(C.RANK, F.row_number().over(w))
        .filter(F.col(C.RANK) <= n)
        .select(C.USER_IDX, C.ITEM_IDX, F.col(score_col).alias(C.SCORE), C.RANK)
    )


def with_original_ids(recs: DataFrame, user_index: DataFrame, item_index: DataFrame, model: str,
                      version: str) -> DataFrame:
    """Recommendations as data engineers read them: original ids, rank, score, the model's name (as ``metrics``
    names it) and its version (the run that fitted it)."""
    return (
        recs.join(F.broadcast(user_index), C.USER_IDX)
        .join(F.broadcast(item_index), C.ITEM_IDX)
        .select(C.USER, C.ITEM, F.col(C.RANK).cast(T.IntegerType()), F.col(C.SCORE).cast(T.DoubleType()),
                F.lit(model).alias(C.MODEL), F.lit(version).alias(C.MODEL_VERSION))
    )
