"""Publishing by partition-location swap: whole partitions only, reruns replace, failures leave output intact."""

from __future__ import annotations

import os
import time
from datetime import date

import pytest
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank import warehouse

pytestmark = pytest.mark.spark
D1, D2 = date(2026, 1, 1), date(2026, 1, 2)


@pytest.fixture
def wcfg(cfg, spark, request):
    db = f"wh_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"[:60]
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {db}")
    return cfg.replace(warehouse={"database": db, "grace_hours": 0.0})


def _publish(spark, cfg, run_date, run_id, n, tag):
    out = warehouse.RunOutputs(spark, cfg, run_date, run_id)
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
    out = warehouse.RunOutputs(spark, wcfg, D1, "r2")
    out.stage("recs", spark.range(9).withColumn("tag", F.lit("half")))  # a run that fails before publish
    assert [tuple(r) for r in _rows(spark, wcfg, D1)] == [("a", 5)]


def test_replaced_versions_are_kept_for_the_grace_period(spark, wcfg):
    _publish(spark, wcfg, D1, "r1", 2, "a")
    loc1 = warehouse.partition_location(spark, wcfg.warehouse.database, "recs", D1)
    kept = wcfg.replace(warehouse={"grace_hours": 1.0})
    _publish(spark, kept, D1, "r2", 2, "b")
    path1 = loc1.removeprefix("file:")
    assert os.path.isdir(path1), "a replaced version inside the grace period must stay for running readers"
    old = time.time() - 2 * 3600
    os.utime(path1, (old, old))
    removed = warehouse.collect_garbage(spark, wcfg.warehouse.database, "recs", 1.0)
    assert [str(p) for p in removed] == [path1]
    assert [tuple(r) for r in _rows(spark, wcfg, D1)] == [("b", 2)]


def test_append_rows_and_latest_partition(spark, wcfg):
    db = wcfg.warehouse.database
    warehouse.append_rows(spark, db, "hist", spark.createDataFrame([(1, "x")], ["a", "b"]))
    warehouse.append_rows(spark, db, "hist", spark.createDataFrame([("y", 2)], ["b", "a"]))
    assert sorted(tuple(r) for r in spark.table(f"{db}.hist").collect()) == [(1, "x"), (2, "y")]
    # a newer row with a column the table lacks (runs.published_model): the column is added, old rows get null
    warehouse.append_rows(spark, db, "hist", spark.createDataFrame([(3, "z", "ease")], ["a", "b", "c"]))
    assert sorted(tuple(r) for r in spark.table(f"{db}.hist").collect()) == [(1, "x", None), (2, "y", None),
                                                                          (3, "z", "ease")]
    assert warehouse.latest_partition(spark, db, "recs") is None
    _publish(spark, wcfg, D1, "r1", 2, "a")
    _publish(spark, wcfg, D2, "r2", 3, "b")
    latest = warehouse.latest_partition(spark, db, "recs")
    assert latest.count() == 3 and C.RUN_DATE not in latest.columns


def test_a_newer_night_with_more_columns_adds_them_to_the_table(spark, wcfg):
    """An existing warehouse's interactions table gained source_file/source_row (issue 11): a night that writes
    them makes them queryable; earlier nights read null there."""
    db = wcfg.warehouse.database
    _publish(spark, wcfg, D1, "r1", 2, "a")
    out = warehouse.RunOutputs(spark, wcfg, D2, "r2")
    out.stage("recs", spark.range(3).withColumn("tag", F.lit("b")).withColumn(C.SOURCE_ROW, F.col("id") + 10))
    out.publish(["recs"])
    rows = spark.sql(f"SELECT {C.RUN_DATE}, id, {C.SOURCE_ROW} FROM {db}.recs").collect()
    assert sorted((str(r[0]), r[1], r[2]) for r in rows) == [
        (str(D1), 0, None), (str(D1), 1, None), (str(D2), 0, 10), (str(D2), 1, 11), (str(D2), 2, 12)]
