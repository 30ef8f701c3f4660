"""Sequence models as a candidate source: Spark builds per-user item sequences, Petastorm reads them, torch trains,
Spark scores.

Spark writes one row per user (``user_idx``, ``items``: the latest ``max_len + 1`` item indexes in time order,
ties broken by input order) as Parquet shards; :func:`read_sequences` reads them in place through Petastorm
(array columns, left-padded in the collate step). Training runs on the driver (CUDA with bf16 when present) or in
``train.num_processes`` processes through ``TorchDistributor``. Scoring is a ``mapInPandas`` over every user's
sequence with the weights broadcast once: the encoder's last hidden state times the item embeddings, seen items
masked, top-N (:func:`reelrank.factorize.top_n_block`). The candidate source around these is
:class:`reelrank.candidates.sequence.SequenceSource`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank.config import SequenceConfig, TrainConfig
from reelrank.device import choose_device
from reelrank.factorize import SEEN, top_n_block
from reelrank.loader import shard_url
from reelrank.popularity import RECS_SCHEMA
from reelrank.seqmodels import SequenceModel, pad_left
from reelrank.training.distributed import run_distributed

log = logging.getLogger(__name__)

ITEMS = "items"
"""The sequence column: item indexes in time order (array<int>)."""


def order_columns(interactions: DataFrame) -> list[str]:
    """How a user's interactions are ordered: time, then input order where the frame has it (file, row), then
    item index, so the order is total and the same on every run."""
    return [C.TS, *C.origin_columns(interactions.columns), C.ITEM_IDX]


def sequence_frame(interactions: DataFrame, keep: int | None, seen: bool = False) -> DataFrame:
    """One row per user: ``user_idx`` (int), ``items`` (the latest ``keep`` item indexes, oldest first; all when
    ``keep`` is None) and, with ``seen``, every item the user interacted with (``_seen``)."""
    order = order_columns(interactions)
    events = F.struct(*[F.col(c) for c in order])
    per_user = interactions.groupBy(F.col(C.USER_IDX).cast("int").alias(C.USER_IDX)).agg(
        F.sort_array(F.collect_list(events)).alias("_events"))
    items = F.transform("_events", lambda e: e[C.ITEM_IDX].cast("int"))
    if keep is not None:
        items = F.slice(items, F.greatest(F.size("_events") - keep + 1, F.lit(1)), keep)
    cols = [F.col(C.USER_IDX), items.alias(ITEMS)]
    if seen:
        cols.append(F.transform("_events", lambda e: e[C.ITEM_IDX].cast("long")).alias(SEEN))
    return per_user.select(*cols)


def write_sequence_shards(interactions: DataFrame, path: str, cfg: SequenceConfig, files: int) -> None:
    """The training shards: each user's latest ``max_len + 1`` items (the last one is the validation target)."""
    frame = sequence_frame(interactions, cfg.max_len + 1)
    row_bytes = 4 * (cfg.max_len + 2)
    (frame.repartition(files).write.mode("overwrite")
     .option("parquet.block.size", str(cfg.rows_per_row_group * row_bytes)).parquet(path))


def read_sequences(path: str, length: int, workers: int = 1) -> tuple[np.ndarray, torch.Tensor]:
    """Every row of the sequence shards through Petastorm: ``(user_idx, tokens [users, length])``, ordered by
    user. The reader's transform pads each row group's arrays on the left to ``length`` (item ``i`` becomes token
    ``i + 1``, 0 pads), since Petastorm collates an array column into one matrix per row group."""
    from petastorm import make_batch_reader
    from petastorm.transform import TransformSpec

    def pad(pdf: pd.DataFrame) -> pd.DataFrame:
        tokens = pad_left([np.asarray(r, np.int64) + 1 for r in pdf[ITEMS]], length).numpy()
        return pdf.assign(**{ITEMS: list(tokens)})

    spec = TransformSpec(pad, edit_fields=[(ITEMS, np.int64, (length,), False)])
    users: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    with make_batch_reader(shard_url(path), schema_fields=[C.USER_IDX, ITEMS], reader_pool_type="thread",
                           workers_count=workers, shuffle_row_groups=False, num_epochs=1,
                           transform_spec=spec) as reader:
        for batch in reader:
            users.append(np.asarray(getattr(batch, C.USER_IDX), dtype=np.int64))
            rows.append(np.asarray(getattr(batch, ITEMS), dtype=np.int64).reshape(-1, length))
    user_arr = np.concatenate(users) if users else np.zeros(0, np.int64)
    tokens = np.concatenate(rows) if rows else np.zeros((0, length), np.int64)
    order = np.argsort(user_arr, kind="stable")
    return user_arr[order], torch.from_numpy(tokens[order])


def score_sequences(frame: DataFrame, model_bytes: bytes, n: int, block: int = 256) -> DataFrame:
    """Top-``n`` unseen items per row of ``frame`` (``user_idx``, ``items``, ``_seen``) as ``RECS_SCHEMA``."""
    weights = frame.sparkSession.sparkContext.broadcast(model_bytes)

    def score(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        torch.set_num_threads(1)  # one thread per Spark task: Spark already shares out the cores
        model = SequenceModel.from_bytes(weights.value)
        item_ids = np.arange(model.n_items, dtype=np.int64)
        item_vecs = model.item_embedding.weight[1:].detach().float().numpy()
        for pdf in batches:
            tokens = pad_left([np.asarray(s, np.int64) + 1 for s in pdf[ITEMS]], model.cfg.max_len)
            states = model.last_hidden(tokens, block).numpy()
            for start in range(0, len(pdf), block):
                part = pdf.iloc[start:start + block]
                hidden = states[start:start + block]
                seen = [np.unique(np.asarray(s, np.int64)) for s in part[SEEN]]
                yield top_n_block(part[C.USER_IDX].to_numpy(), hidden, list(seen), item_ids, item_vecs, n)

    return frame.mapInPandas(score, RECS_SCHEMA)


def fit_distributed(kind: str, n_items: int, cfg: SequenceConfig, tokens: torch.Tensor,
                    train: TrainConfig, init: SequenceModel | None = None,
                    checkpoint_path: str | os.PathLike | None = None) -> SequenceModel:
    """Train in ``train.num_processes`` local processes (:func:`run_distributed`; each takes every n-th user,
    gradients all-reduced by DDP); rank 0's weights come back."""
    use_gpu = choose_device(train.device).type == "cuda"
    out = run_distributed(_distributed_worker, train.num_processes, use_gpu, kind, n_items, dataclasses.asdict(cfg),
                          tokens.numpy(), init.to_bytes() if init is not None else None,
                          str(checkpoint_path) if checkpoint_path else None)
    return SequenceModel.from_bytes(out)


def _distributed_worker(device: torch.device, kind: str, n_items: int, cfg_dict: dict[str, Any], tokens: np.ndarray,
                        init: bytes | None, checkpoint_path: str | None) -> bytes:
    """One training process (in the process group): fit on its share, return the weights."""
    model = SequenceModel(kind, n_items, SequenceConfig(**cfg_dict))
    if init is not None:
        model.net.load_state_dict(SequenceModel.from_bytes(init).net.state_dict())
    model.fit(torch.from_numpy(tokens), device, distributed=True, checkpoint_path=checkpoint_path)
    return model.to_bytes()
