"""Publishing by one pointer flip: all tables of a night at once, reruns replace, failures leave output intact."""

from __future__ import annotations

import os
import time
from datetime import date

import pytest
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank import faults
from reelrank.warehouse import publishing, storage

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # every test publishes through the metastore
D1, D2 = date(2026, 1, 1), date(2026, 1, 2)


@pytest.fixture
def wcfg(cfg, spark, request):
    db = f"wh_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"[:60]
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {db}")
    return cfg.replace(warehouse={"database": db, "grace_hours": 0.0})


def _publish(spark, cfg, run_date, run_id, n, tag):
    out = publishing.RunOutputs(spark, cfg, run_date, run_id)
    out.stage("recs", spark.range(n).withColumn("tag", F.lit(tag)))
    return out.publish(["recs"])


def _rows(spark, cfg, run_date):
    return spark.sql(
        f"SELECT tag, count(*) AS n FROM {cfg.warehouse.database}.recs WHERE {C.RUN_DATE} = DATE'{run_date}' "
        "GROUP BY tag"
    ).collect()


def test_rerun_replaces_the_partition(spark, wcfg):
    _publish(spark, wcfg, D1, "r1", 5, "a")
    _publish(spark, wcfg, D2, "r2", 3, "b")
    _publish(spark, wcfg, D1, "r3", 4, "c")
    assert [tuple(r) for r in _rows(spark, wcfg, D1)] == [("c", 4)]
    assert [tuple(r) for r in _rows(spark, wcfg, D2)] == [("b", 3)]
    assert spark.table(f"{wcfg.warehouse.database}.recs").count() == 7


def test_staged_but_unpublished_output_is_invisible(spark, wcfg):
    _publish(spark, wcfg, D1, "r1", 5, "a")
    out = publishing.RunOutputs(spark, wcfg, D1, "r2")
    out.stage("recs", spark.range(9).withColumn("tag", F.lit("half")))  # a run that fails before publish
    assert [tuple(r) for r in _rows(spark, wcfg, D1)] == [("a", 5)]


def test_replaced_versions_are_kept_for_the_grace_period(spark, wcfg):
    _publish(spark, wcfg, D1, "r1", 2, "a")
    loc1 = publishing.partition_location(spark, wcfg.warehouse.database, "recs", D1)
    kept = wcfg.replace(warehouse={"grace_hours": 1.0})
    _publish(spark, kept, D1, "r2", 2, "b")
    path1 = loc1.removeprefix("file:")
    assert os.path.isdir(path1), "a replaced version inside the grace period must stay for running readers"
    old = time.time() - 2 * 3600
    os.utime(path1, (old, old))
    removed = publishing.collect_garbage(spark, wcfg.warehouse.database, "recs", 1.0)
    assert [str(p) for p in removed] == [path1]
    assert [tuple(r) for r in _rows(spark, wcfg, D1)] == [("b", 2)]


def test_append_rows_and_latest_partition(spark, wcfg):
    db = wcfg.warehouse.database
    publishing.append_rows(spark, db, "hist", spark.createDataFrame([(1, "x")], ["a", "b"]))
    publishing.append_rows(spark, db, "hist", spark.createDataFrame([("y", 2)], ["b", "a"]))
    assert sorted(tuple(r) for r in spark.table(f"{db}.hist").collect()) == [(1, "x"), (2, "y")]
    # a newer row with a column the table lacks (runs.published_model): the column is added, old rows get null
    publishing.append_rows(spark, db, "hist", spark.createDataFrame([(3, "z", "ease")], ["a", "b", "c"]))
    assert sorted(tuple(r) for r in spark.table(f"{db}.hist").collect()) == [(1, "x", None), (2, "y", None),
                                                                          (3, "z", "ease")]
    assert publishing.latest_partition(spark, db, "recs") is None
    _publish(spark, wcfg, D1, "r1", 2, "a")
    _publish(spark, wcfg, D2, "r2", 3, "b")
    latest = publishing.latest_partition(spark, db, "recs")
    assert latest.count() == 3 and C.RUN_DATE not in latest.columns


def test_a_newer_night_with_more_columns_adds_them_to_the_table(spark, wcfg):
    """An existing warehouse's interactions table gained source_file/source_row (issue 11): a night that writes
    them makes them queryable; earlier nights read null there."""
    db = wcfg.warehouse.database
    _publish(spark, wcfg, D1, "r1", 2, "a")
    out = publishing.RunOutputs(spark, wcfg, D2, "r2")
    out.stage("recs", spark.range(3).withColumn("tag", F.lit("b")).withColumn(C.SOURCE_ROW, F.col("id") + 10))
    out.publish(["recs"])
    rows = spark.sql(f"SELECT {C.RUN_DATE}, id, {C.SOURCE_ROW} FROM {db}.recs").collect()
    assert sorted((str(r[0]), r[1], r[2]) for r in rows) == [
        (str(D1), 0, None), (str(D1), 1, None), (str(D2), 0, 10), (str(D2), 1, 11), (str(D2), 2, 12)]


TABLES = ["recs", "stats", "index"]


def _night(spark, cfg, run_date, run_id, n):
    """A three-table night: every table holds ``n`` rows tagged with the run."""
    out = publishing.RunOutputs(spark, cfg, run_date, run_id)
    for i, table in enumerate(TABLES):
        out.stage(table, spark.range(n + i).withColumn("tag", F.lit(run_id)))
    return out


def _seen(spark, cfg, run_date):
    """What a reader's documented queries return now: per table, the runs and rows shown for the date."""
    db = cfg.warehouse.database
    return {t: sorted(tuple(r) for r in spark.sql(
        f"SELECT tag, count(*) FROM {db}.{t} WHERE {C.RUN_DATE} = DATE'{run_date}' GROUP BY tag").collect())
        for t in TABLES}


@pytest.mark.parametrize("dies_at", [*(f"publish.registered#{i}" for i in range(1, len(TABLES) + 1)), "publish.flip"])
def test_a_run_killed_between_any_two_steps_of_publishing_shows_last_night_whole(spark, wcfg, monkeypatch, dies_at):
    """Readers see all of last night's tables until the flip, then all of tonight's; a rerun finishes it."""
    _night(spark, wcfg, D1, "last", 4).publish(TABLES)
    last = _seen(spark, wcfg, D1)
    assert last == {t: [("last", 4 + i)] for i, t in enumerate(TABLES)}
    tonight = _night(spark, wcfg, D1, "tonight", 7)
    monkeypatch.setenv(faults.ENV, f"{dies_at}=raise")
    faults.reset()
    with pytest.raises(faults.InjectedFault):
        tonight.publish(TABLES)
    monkeypatch.delenv(faults.ENV)
    assert _seen(spark, wcfg, D1) == last
    assert publishing.published_run(spark, wcfg.warehouse.database, D1) == "last"
    publishing.RunOutputs(spark, wcfg, D1, "tonight").publish(TABLES)  # --resume: the staged tables, published
    assert _seen(spark, wcfg, D1) == {t: [("tonight", 7 + i)] for i, t in enumerate(TABLES)}


def test_one_flip_turns_every_table(spark, wcfg):
    db = wcfg.warehouse.database
    _night(spark, wcfg, D1, "r1", 2).publish(TABLES)
    _night(spark, wcfg, D2, "r2", 3).publish(TABLES)
    assert publishing.published_runs(spark, db) == {D1: "r1", D2: "r2"}
    assert publishing.flip(spark, db, D2, "r1x") == "r2"  # an unregistered run: no table shows rows for D2
    assert _seen(spark, wcfg, D2) == {t: [] for t in TABLES}
    publishing.flip(spark, db, D2, "r2")
    assert _seen(spark, wcfg, D2) == {t: [("r2", 3 + i)] for i, t in enumerate(TABLES)}
    where = publishing.partition_location(spark, db, "stats", D2)
    assert storage.resolve(where).endswith(f"/stats/{C.RUN_DATE}={D2}/r2")


def test_a_warehouse_from_before_the_pointer_is_moved_to_it(spark, wcfg):
    """Tables partitioned by run_date (published by an older reelrank) become versions behind views; every
    published date still reads the same rows, and a new night publishes beside them."""
    db = wcfg.warehouse.database
    root = publishing.table_root(spark, db, "recs")
    spark.sql(f"CREATE TABLE {db}.recs (id BIGINT, tag STRING, {C.RUN_DATE} DATE) USING parquet "
              f"PARTITIONED BY ({C.RUN_DATE}) LOCATION '{root}'")
    for day, run_id, n in ((D1, "old1", 2), (D2, "old2", 3)):
        location = f"{root}/{C.RUN_DATE}={day}/{run_id}"
        spark.range(n).withColumn("tag", F.lit(run_id)).write.parquet(location)
        spark.sql(f"ALTER TABLE {db}.recs ADD PARTITION ({C.RUN_DATE}='{day}') LOCATION '{location}'")
    assert [tuple(r) for r in _rows(spark, wcfg, D2)] == [("old2", 3)]
    _publish(spark, wcfg, date(2026, 1, 3), "new", 5, "new")
    assert spark.catalog.getTable(f"{db}.recs").tableType == "VIEW"
    assert [tuple(r) for r in _rows(spark, wcfg, D1)] == [("old1", 2)]
    assert [tuple(r) for r in _rows(spark, wcfg, D2)] == [("old2", 3)]
    assert [tuple(r) for r in _rows(spark, wcfg, date(2026, 1, 3))] == [("new", 5)]
    assert publishing.published_runs(spark, db) == {D1: "old1", D2: "old2", date(2026, 1, 3): "new"}


def test_unpublished_versions_past_the_grace_period_are_collected(spark, wcfg):
    """A killed run's registered but never shown version, and a failed run's staged one, go after the grace
    period; the shown ones stay."""
    db = wcfg.warehouse.database
    _publish(spark, wcfg, D1, "shown", 2, "a")
    out = publishing.RunOutputs(spark, wcfg, D1, "killed")
    out.stage("recs", spark.range(3).withColumn("tag", F.lit("k")))
    publishing.register_version(spark, db, "recs", "killed", out.location("recs"), out.staged["recs"][1])
    failed = publishing.RunOutputs(spark, wcfg, D2, "failed")
    failed.stage("recs", spark.range(3).withColumn("tag", F.lit("f")))
    old = time.time() - 2 * 3600
    for loc in (out.location("recs"), failed.location("recs")):
        os.utime(storage.resolve(loc), (old, old))
    removed = publishing.collect_garbage(spark, db, "recs", 1.0)
    assert sorted(storage.name(p) for p in removed) == ["failed", "killed"]
    parts = {r[0] for r in spark.sql(f"SHOW PARTITIONS {db}.recs_versions").collect()}
    assert parts == {"run_id=shown"}
    assert [tuple(r) for r in _rows(spark, wcfg, D1)] == [("a", 2)]
