"""The train stage: the ranker fitted on the labelled shards through Petastorm."""

from __future__ import annotations

from pyspark.sql import DataFrame

from reelrank import train
from reelrank.catalog import Stage
from reelrank.config import Config
from reelrank.loader import shard_schema
from reelrank.runstate import Result, Shards, StageIO
from reelrank.stages.shared import model_file


def run(io: StageIO, cfg: Config, *, shards_train: Shards, shards_val: Shards, user_index: DataFrame,
        item_index: DataFrame) -> Result:
    """Train the ranker on the shards through Petastorm."""
    model_dir = io.folder("model")
    result = train.train(shards_train.path, shards_val.path, cfg.train, model_file(model_dir, cfg.train.model),
                         user_index.count(), item_index.count())
    return Result({"model": model_dir}, shard_schema(shards_train.path)[1],
                  f"{cfg.train.model} on {result.device}, {len(result.train_loss)} epochs, loss "
                  f"{result.train_loss[0]:.4f} → {result.train_loss[-1]:.4f}, {result.samples_per_s:,.0f} samples/s")


STAGE = Stage("train", run, inputs=("shards_train", "shards_val", "user_index", "item_index"), outputs=("model",),
              counts="training rows")
