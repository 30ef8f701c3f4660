"""Tiny hand-built frames and a real :class:`~reelrank.runstate.StageIO` for calling one stage's function directly,
without the runner (tests/test_stage_*.py)."""

from __future__ import annotations

from datetime import date

from reelrank import catalog
from reelrank import columns as C

USERS, ITEMS, PER_USER = 10, 12, 6
ACCEPTED_DDL = "user_id STRING, item_id STRING, rating DOUBLE, ts LONG, source_file STRING, source_row LONG"
T0 = 1_700_000_000


def stage_io(spark, cfg, stage: str, day: date):
    """A fresh run of ``day`` and the StageIO of ``stage`` in it (writes go under the test run's data dir)."""
    from reelrank.runstate import RunContext, StageIO

    ctx = RunContext.start(spark, cfg, day)
    return StageIO(ctx, catalog.stage(stage))


def accepted_rows() -> list[tuple]:
    """User u rates six items, spaced two apart from 3u (mod 12), ratings 1..5 in turn, one second apart."""
    return [(f"u{u:02d}", f"i{(3 * u + 2 * j) % ITEMS:02d}", float(1 + (u + j) % 5), T0 + 100 * u + j, "f.csv",
             PER_USER * u + j) for u in range(USERS) for j in range(PER_USER)]


def accepted(spark):
    return spark.createDataFrame(accepted_rows(), ACCEPTED_DDL)


def interactions(spark):
    """The accepted rows with indexes: user u is u, item i is i."""
    rows = [(int(u[1:]), int(i[1:]), u, i, r, ts, f, n) for u, i, r, ts, f, n in accepted_rows()]
    return spark.createDataFrame(rows, f"{C.USER_IDX} INT, {C.ITEM_IDX} INT, {ACCEPTED_DDL}")


def index(spark, entity: str, n: int):
    """``<entity>_id -> <entity>_idx`` for ids ``u00``.. / ``i00``.. numbered 0..n-1."""
    prefix = entity[0]
    return spark.createDataFrame([(f"{prefix}{k:02d}", k) for k in range(n)], f"{entity}_id STRING, {entity}_idx INT")
