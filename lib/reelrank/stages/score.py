"""The score stage: tonight's top-N per user from the champion list, with original ids."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank import score
from reelrank.catalog import Stage
from reelrank.config import Config
from reelrank.runstate import Result, Shards, StageIO
from reelrank.stages.shared import champion_of, model_bytes


def run(io: StageIO, cfg: Config, *, shards_score: Shards, model: str, champion: DataFrame,
        candidates_full: dict[str, DataFrame], user_index: DataFrame, item_index: DataFrame) -> Result:
    """Tonight's top-N per user with original ids, from the champion list: the ranker scoring every candidate in
    Spark, or the candidate source that beat it (its list fitted on all interactions)."""
    chosen = champion_of(champion)
    if chosen.model == cfg.train.model:
        best = score.top_n(score.score_candidates(shards_score.frame, model_bytes(model, cfg.train.model)),
                           cfg.score.top_n)
    else:
        best = candidates_full[chosen.model].where(F.col(C.RANK) <= cfg.score.top_n)
    recs = io.write("recommendations", score.with_original_ids(best, user_index, item_index, chosen.model,
                                                               io.run_id))
    return Result({"recommendations": recs}, recs.count(),
                  f"top {cfg.score.top_n} per user from {chosen.model} (fitted by run {io.run_id})")


STAGE = Stage(
    "score", run,
    inputs=("shards_score", "model", "champion", "candidates_full", "user_index", "item_index"),
    outputs=("recommendations",),
    counts="recommendations",
)
