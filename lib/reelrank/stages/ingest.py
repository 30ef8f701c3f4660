"""The ingest stage: the source read and every row validated; rejects kept with a reason."""

from __future__ import annotations

import logging

from pyspark import StorageLevel

from reelrank.catalog import Stage
from reelrank.config import Config
from reelrank.inputs import ingest, sources
from reelrank.inputs.sources import ITEMS_SCHEMA
from reelrank.runstate import Result, RunFailed, StageIO

log = logging.getLogger("reelrank")


def run(io: StageIO, cfg: Config) -> Result:
    """Read the source, validate every row against its rating scale and the run date; rejects go to
    ``rejected_interactions`` with a reason, and too many invalid rows fail the run before anything is published."""
    raw = sources.read_source(io.spark, cfg.source, cfg.synthetic)
    raw_rows = raw.interactions.cache()
    n_input = raw_rows.count()
    scale = sources.rating_scale(cfg.source.kind, cfg.ingest)
    # annotated once (its duplicate window is a shuffle of every row), then split into the two tables
    marked = ingest.annotate(raw_rows, cfg.ingest, scale, io.run_date).persist(StorageLevel.MEMORY_AND_DISK)
    accepted, rejected = ingest.split(marked)
    rejected = io.write("rejected_interactions", rejected)
    accepted = io.write("accepted", accepted)
    raw_items = io.write("raw_items", raw.items if raw.items is not None
                         else io.spark.createDataFrame([], ITEMS_SCHEMA))
    marked.unpersist()
    raw_rows.unpersist()
    counts = ingest.summarize(accepted, rejected)
    n_acc, n_rej = counts[ingest.ACCEPTED], counts[ingest.REJECTED]
    reasons = ", ".join(f"{r} {counts[r]:,}" for r in ingest.REASONS if counts[r])
    if n_acc + n_rej != n_input:
        raise RunFailed(f"ingest lost rows: input {n_input} != accepted {n_acc} + rejected {n_rej}")
    rejects_at = io.location("rejected_interactions")
    try:
        ingest.check_rejected_share(counts, cfg.ingest, rejects_at)
    except ingest.TooManyRejected as e:
        raise RunFailed(str(e)) from None
    if n_acc == 0:
        where = f" of {cfg.source.input}" if cfg.source.input else ""
        raise RunFailed(f"no valid interactions among {n_input:,} input rows{where} (see {rejects_at})")
    invalid = sum(counts[r] for r in ingest.INVALID_REASONS)
    if invalid:
        log.warning("ingest: %s of %s input rows are invalid (ratings checked against %s); see %s", f"{invalid:,}",
                    f"{n_input:,}", scale.describe(), rejects_at)
    return Result({"rejected_interactions": rejected, "accepted": accepted, "raw_items": raw_items}, n_acc,
                  f"input {n_input:,} = accepted {n_acc:,} + rejected {n_rej:,}" + (f" ({reasons})" if reasons else ""))


STAGE = Stage("ingest", run, outputs=("rejected_interactions", "accepted", "raw_items"), counts="accepted interactions")
