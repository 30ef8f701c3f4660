"""The evaluate stage: every list's offline metrics on the holdout, and tonight's champion list."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
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
    """Every candidate source's top-k against the held-out interactions of every user with a holdout (no source
    saw them); the ranker's on its validation users (it learnt from the others'); rating RMSE/MAE of the item
    neighbours. The champion: the best source on all those users, then the ranker against it, paired on the
    ranker's validation users."""
    ks, kmax = cfg.evaluate.ks, max(cfg.evaluate.ks)
    val_rows = shards_val.frame
    val_users = val_rows.select(C.USER_IDX).distinct()
    truth = holdout.filter(F.col(C.RATING) >= cfg.evaluate.relevance_threshold)
    truth_pdf: pd.DataFrame = truth.select(C.USER_IDX, C.ITEM_IDX).toPandas()
    n_users = int(truth_pdf[C.USER_IDX].nunique())
    ranker = cfg.train.model
    lists = {name: (recs, truth, n_users) for name, recs in candidates_history.items()}
    val_truth = truth.join(val_users, C.USER_IDX)
    val_pdf: pd.DataFrame = val_truth.select(C.USER_IDX).distinct().toPandas()
    val_ids = np.sort(val_pdf[C.USER_IDX].to_numpy())
    n_val = len(val_ids)
    ranked = score.top_n(score.score_candidates(val_rows, model_bytes(model, ranker)), kmax)
    lists[ranker] = (ranked.join(val_users, C.USER_IDX), val_truth, n_val)
    rows, per_user = [], {}
    for name, (recs, wanted, users) in lists.items():
        recs = recs.filter(F.col(C.RANK) <= kmax).cache()
        metrics = evaluate.ranking_metrics(recs, wanted, ks, user_col=C.USER_IDX, item_col=C.ITEM_IDX)
        rows += evaluate.metric_rows(name, metrics, users)
        if cfg.quality.metric in evaluate.PER_USER_METRICS:
            per_user[name] = evaluate.per_user_ranking(recs.toPandas(), truth_pdf, cfg.quality.k)[
                evaluate.PER_USER_METRICS[cfg.quality.metric]].sort_index()
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
    champion = quality.choose_in_two_tiers(gate, ranker, cfg.quality, per_user or None, val_ids)
    chosen = io.spark.createDataFrame([(champion.model, champion.why)], "model STRING, why STRING")
    log.info("champion   %s", champion.why)
    ndcg = {r[0]: r[3] for r in rows if r[1] == "ndcg" and r[2] == ks[0]}
    return Result({"metrics": metrics_df, "champion": io.write("champion", chosen)}, metrics_df.count(),
                  f"ndcg@{ks[0]} on {n_users:,} users ({ranker} on {n_val:,} of them): "
                  + ", ".join(f"{m} {v:.3f}" for m, v in ndcg.items())
                  + f"; item-neighbour rmse {rating['rmse']:.3f} ({fallback:.1%} fell back to a mean); "
                  f"publishing {champion.model}")


STAGE = Stage(
    "evaluate", run,
    inputs=("shards_val", "holdout", "history", "item_nb_history", "candidates_history", "model"),
    outputs=("metrics", "champion"),
    counts="metric rows",
)
