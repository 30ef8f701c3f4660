"""The evaluate stage: every list's offline metrics on the validation users, and tonight's champion list."""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank import evaluate, knn, quality, score
from reelrank.catalog import Stage
from reelrank.config import Config
from reelrank.runstate import Result, Shards, StageIO
from reelrank.stages.shared import model_bytes

log = logging.getLogger("reelrank")


def run(io: StageIO, cfg: Config, *, shards_val: Shards, holdout: DataFrame, history: DataFrame,
        item_nb_history: DataFrame, candidates_history: dict[str, DataFrame], model: str) -> Result:
    """Every candidate source's and the ranker's top-k for the validation users against their held-out
    interactions; rating RMSE/MAE of the item neighbours."""
    ks, kmax = cfg.evaluate.ks, max(cfg.evaluate.ks)
    val_rows = shards_val.frame
    val_users = val_rows.select(C.USER_IDX).distinct()
    truth = holdout.filter(F.col(C.RATING) >= cfg.evaluate.relevance_threshold).join(val_users, C.USER_IDX)
    n_users = truth.select(C.USER_IDX).distinct().count()
    lists = dict(candidates_history)
    lists[cfg.train.model] = score.top_n(score.score_candidates(val_rows, model_bytes(model, cfg.train.model)), kmax)
    rows = []
    per_user = {}
    truth_pdf = truth.select(C.USER_IDX, C.ITEM_IDX).toPandas()
    for name, recs in lists.items():
        recs = recs.join(val_users, C.USER_IDX).filter(F.col(C.RANK) <= kmax).cache()
        metrics = evaluate.ranking_metrics(recs, truth, ks, user_col=C.USER_IDX, item_col=C.ITEM_IDX)
        rows += evaluate.metric_rows(name, metrics, n_users)
        if cfg.quality.metric in evaluate.PER_USER_METRICS:
            per_user[name] = evaluate.per_user_ranking(recs.toPandas(), truth_pdf, cfg.quality.k)[
                evaluate.PER_USER_METRICS[cfg.quality.metric]].sort_index().to_numpy()
        recs.unpersist()
    preds = knn.predict(history, holdout, "item", cfg.neighbours, mode="topk",
                               neighbours=item_nb_history).cache()
    n_rated = holdout.select(C.USER_IDX).distinct().count()
    rating = evaluate.rating_metrics(preds)
    rows += evaluate.metric_rows("item_neighbours", rating, n_rated)
    fallback = knn.fallback_rate(preds)
    preds.unpersist()
    metrics_df = io.write("metrics", evaluate.metrics_frame(io.spark, rows))
    gate = {r[0]: (r[3], r[4]) for r in rows if r[1] == cfg.quality.metric and r[2] == cfg.quality.k}
    champion = quality.choose_champion(gate, cfg.train.model, cfg.quality, per_user or None)
    chosen = io.spark.createDataFrame([(champion.model, champion.why)], "model STRING, why STRING")
    log.info("champion   %s", champion.why)
    ndcg = {r[0]: r[3] for r in rows if r[1] == "ndcg" and r[2] == ks[0]}
    return Result({"metrics": metrics_df, "champion": io.write("champion", chosen)}, metrics_df.count(),
                  f"ndcg@{ks[0]} on {n_users:,} users: " + ", ".join(f"{m} {v:.3f}" for m, v in ndcg.items())
                  + f"; item-neighbour rmse {rating['rmse']:.3f} ({fallback:.1%} fell back to a mean); "
                  f"publishing {champion.model}")


STAGE = Stage(
    "evaluate", run,
    inputs=("shards_val", "holdout", "history", "item_nb_history", "candidates_history", "model"),
    outputs=("metrics", "champion"),
    counts="metric rows",
)
