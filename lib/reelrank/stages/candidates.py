"""The candidates stage: every configured candidate source fitted on the history and on all ratings."""

from __future__ import annotations

import logging
import time
from typing import Any

from pyspark.sql import DataFrame

from reelrank import candidates
from reelrank import columns as C
from reelrank.catalog import Stage
from reelrank.config import Config
from reelrank.ids import neighbour_ids, with_ids
from reelrank.runstate import Result, StageIO
from reelrank.stages.shared import ratings
from reelrank.warehouse import storage

log = logging.getLogger("reelrank")


def run(io: StageIO, cfg: Config, *, interactions: DataFrame, history: DataFrame, user_index: DataFrame,
        item_index: DataFrame) -> Result:
    """Fit every configured candidate source on the history and on all ratings; keep each one's top-n lists.

    The full fit's neighbour lists and factors are published; the history fit's item lists feed rating metrics.
    """
    names = cfg.candidates.sources
    emitted = {t.name: t for t in candidates.emitted()}
    index = {"user": (user_index, C.USER, C.USER_IDX), "item": (item_index, C.ITEM, C.ITEM_IDX)}

    def published(table: str, df: DataFrame) -> DataFrame:
        """A source's table with the original ids of its entity (and, for vectors, the run id)."""
        frame, id_col, idx_col = index[emitted[table].entity]
        if emitted[table].shape == "neighbours":
            return neighbour_ids(df, frame, id_col, idx_col)
        return with_ids(df, frame, idx_col, io.run_id)

    rows: dict[tuple[str, str], int] = {}
    seconds: dict[str, float] = {}
    seq_dir = storage.makedirs(io.folder("sequences"))
    out: dict[str, Any] = {"sequences": seq_dir, "candidates_history": {}, "candidates_full": {}}
    from_history: dict[str, candidates.CandidateSource] = {}
    served_names: list[str] = []
    fits = {"history": "the history (lists evaluated on the holdout, and the ranker's training candidates)",
            "full": "all ratings (the lists scored and published)"}
    for split, data in (("history", history), ("full", ratings(interactions))):
        users = data.select(C.USER_IDX).distinct()
        size = data.count() if split == "full" else 0
        log.info("candidates: fitting %s on %s", ", ".join(names), fits[split])
        for name in names:
            started = time.perf_counter()
            why = candidates.serves_from_history(name, cfg, size) if split == "full" else None
            served = from_history[name].served_on(data) if why else None
            if served is not None:
                source = served
                log.info("candidates: %s serves tonight's lists from its history fit (%s)", name, why)
                served_names.append(name)
            else:
                source = candidates.make(name, cfg, work_dir=storage.join(seq_dir, split, name))
                if name in from_history:
                    source.start_from(from_history[name])
                source.fit(data)
            fitted = time.perf_counter()
            from_history.setdefault(name, source)
            for table, df in source.tables().items():
                kept = emitted[table].kept_from_history
                if split == "full":
                    out[table] = io.write(table, published(table, df))
                elif kept is not None:
                    out[kept] = io.write(kept, df)
            recs = source.recommend(users, candidates.list_length(cfg, name))
            recs = out[f"candidates_{split}"][name] = io.write(f"candidates_{split}", recs, part=name)
            rows[split, name] = recs.count()
            done = time.perf_counter()
            seconds[name] = seconds.get(name, 0.0) + done - started
            log.info("candidates: %s on the %s: %s lists in %.1f s (fit %.1f s, lists %.1f s)", name, split,
                     f"{rows[split, name]:,}", done - started, fitted - started, done - fitted)
    return Result(out, sum(rows.values()), "per user from the full fit (seconds for both fits): " + ", ".join(
        f"{name} {rows['full', name]:,} ({seconds[name]:.0f} s)" for name in names) + (
        f"; served from the history fit: {', '.join(served_names)}" if served_names else ""))


STAGE = Stage(
    "candidates", run,
    inputs=("interactions", "history", "user_index", "item_index"),
    outputs=(*(t.name for t in candidates.emitted()),
             *(name for name, _ in candidates.kept_from_history()),
             "sequences", "candidates_history", "candidates_full"),
    counts="candidates",
)
