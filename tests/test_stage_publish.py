"""The publish stage function's quality gate, fed the earlier nights as declared published inputs (``runs``,
``metrics``), hand-built."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from stagekit import stage_io

from reelrank import quality
from reelrank.catalog import TABLES
from reelrank.stages import publish as stage
from reelrank.warehouse import publishing

pytestmark = pytest.mark.spark
DAY, BEFORE = date(2030, 1, 7), date(2030, 1, 6)
METRICS_DDL = "model STRING, metric STRING, k INT, value DOUBLE, users LONG"


def _runs(spark, *rows):
    return spark.createDataFrame(list(rows), "run_id STRING, run_date DATE, status STRING, finished_at TIMESTAMP, "
                                             "stage_rows MAP<STRING, BIGINT>")


def test_a_drop_against_the_last_published_night_stops_publishing(spark, cfg):
    q = cfg.quality
    io = stage_io(spark, cfg, "publish", DAY)
    tonight = spark.createDataFrame([(cfg.train.model, q.metric, q.k, 0.05, 5000)], METRICS_DDL)
    earlier = spark.createDataFrame([(cfg.train.model, q.metric, q.k, 0.30, 5000, BEFORE)],
                                    f"{METRICS_DDL}, run_date DATE")
    runs = _runs(spark, ("old", BEFORE, "published", datetime(2030, 1, 6, 3), {"score": 40}),
                 ("newer-failed", DAY, "failed", datetime(2030, 1, 7, 1), {"score": 1}))
    recs = spark.createDataFrame([("u1", "i1", 1)] * 30, "user_id STRING, item_id STRING, rank INT")
    champion = spark.createDataFrame([(cfg.train.model, "the test's")], "model STRING, why STRING")
    with pytest.raises(quality.QualityGateFailed, match=rf"{q.metric}@{q.k} fell to 0.0500 on 5,000 users from "
                                                        r"0.3000 on 5,000 in run old"):
        stage.run(io, cfg, champion=champion, metrics=tonight, recommendations=recs, published_runs=runs,
                  published_metrics=earlier)
    assert io.ctx.gate_against is not None and io.ctx.gate_against["run_id"] == "old"
    assert io.ctx.record.published_model == cfg.train.model
    assert publishing.published_run(spark, cfg.warehouse.database, DAY) is None  # nothing swapped in


def test_the_first_night_runs_only_the_absolute_checks(spark, cfg):
    """No earlier night: an empty list fails on its own, whatever the metric."""
    io = stage_io(spark, cfg, "publish", DAY)
    tonight = spark.createDataFrame([(cfg.train.model, cfg.quality.metric, cfg.quality.k, 0.2, 10)], METRICS_DDL)
    empty = spark.createDataFrame([], "user_id STRING, item_id STRING, rank INT")
    champion = spark.createDataFrame([(cfg.train.model, "the test's")], "model STRING, why STRING")
    with pytest.raises(quality.QualityGateFailed, match="^quality gate: no recommendations$"):
        stage.run(io, cfg, champion=champion, metrics=tonight, recommendations=empty, published_runs=None,
                  published_metrics=None)
    assert io.ctx.gate_against is None


def test_publish_reads_every_table_it_swaps_in():
    assert set(TABLES) <= set(stage.STAGE.inputs) and set(stage.STAGE.published) == {"runs", "metrics"}
