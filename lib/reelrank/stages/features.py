"""The features stage: labelled train/val shards from the history fit's candidates, score shards from the full fit's."""

from __future__ import annotations

from pyspark.sql import DataFrame

from reelrank import columns as C
from reelrank import features
from reelrank.catalog import Stage
from reelrank.config import Config
from reelrank.runstate import Result, Shards, StageIO
from reelrank.stages.shared import ratings
from reelrank.warehouse import storage


def run(io: StageIO, cfg: Config, *, interactions: DataFrame, items: DataFrame, history: DataFrame,
        holdout: DataFrame, candidates_history: dict[str, DataFrame], candidates_full: dict[str, DataFrame]) -> Result:
    """Labelled train/val shards from the history fit's candidates; score shards from the full fit's."""
    lists = {name: candidates_history[name] for name in features.sources()}
    # only users with a holdout have labels (a window holdout leaves out those not active in it)
    labelled = features.build_features(history, items, lists, features.missing_rank(cfg), holdout)
    learn = io.write("learn", labelled.join(holdout.select(C.USER_IDX).distinct(), C.USER_IDX, "left_semi"))
    is_val = features.is_validation_user(cfg.features.val_fraction)
    train_dir, val_dir, score_dir = io.folder("shards_train"), io.folder("shards_val"), io.folder("shards_score")
    features.write_shards(learn.filter(~is_val), train_dir, cfg.features)
    features.write_shards(learn.filter(is_val), val_dir, cfg.features)
    serve = {name: candidates_full[name] for name in features.sources()}
    features.write_shards(features.build_features(ratings(interactions), items, serve, features.missing_rank(cfg)),
                          score_dir, cfg.features)
    n_score = Shards(score_dir, io.spark).frame.count()
    n_learn = learn.count()
    out = {"learn": learn, "shards_train": train_dir, "shards_val": val_dir, "shards_score": score_dir}
    return Result(out, n_learn + n_score, f"{n_learn:,} labelled + {n_score:,} to score, shards in "
                  f"{storage.join(io.ctx.work, 'shards')}")


STAGE = Stage(
    "features", run,
    inputs=("interactions", "items", "history", "holdout", "candidates_history", "candidates_full"),
    outputs=("learn", "shards_train", "shards_val", "shards_score"),
    counts="feature rows",
)
