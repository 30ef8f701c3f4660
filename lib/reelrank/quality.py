"""The gate before publishing: tonight's output compared with the last published run."""

from __future__ import annotations

import logging

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank.config import QualityConfig

log = logging.getLogger(__name__)


class QualityGateFailed(RuntimeError):
    """Tonight's output looks wrong next to the last published run; nothing is published."""


def last_published(spark: SparkSession, database: str) -> dict | None:
    """The most recent published run's id, date and recommendation row count, or None before the first."""
    if not spark.catalog.tableExists(f"{database}.runs"):
        return None
    row = (
        spark.table(f"{database}.runs").filter(F.col("status") == "published")
        .orderBy(F.col("finished_at").desc()).select("run_id", C.RUN_DATE, "stage_rows").first()
    )
    if row is None:
        return None
    return {"run_id": row["run_id"], C.RUN_DATE: row[C.RUN_DATE], "rows": (row["stage_rows"] or {}).get("score")}


def _metric(spark: SparkSession, database: str, run_date, model_prefix: str, cfg: QualityConfig) -> float | None:
    if not spark.catalog.tableExists(f"{database}.metrics"):
        return None
    row = (
        spark.table(f"{database}.metrics")
        .filter((F.col(C.RUN_DATE) == F.lit(run_date)) & (F.col("metric") == cfg.metric) & (F.col("k") == cfg.k))
        .filter(F.col(C.MODEL) == model_prefix)
        .select("value").first()
    )
    return None if row is None else float(row[0])


def check(spark: SparkSession, database: str, cfg: QualityConfig, rows: int, metrics: dict[str, float], model: str) -> list[str]:
    """Reasons tonight's output must not be published (empty when it passes).

    ``metrics`` maps "metric@k" to tonight's value for ``model``. Before the first published run only
    the absolute checks apply.
    """
    if not cfg.enabled:
        return []
    problems = []
    if rows == 0:
        problems.append("no recommendations")
    key = f"{cfg.metric}@{cfg.k}"
    value = metrics.get(key)
    if value is None or value != value:
        problems.append(f"{model} has no {key}")
    prev = last_published(spark, database)
    if prev is None:
        return problems
    if prev["rows"] and rows < cfg.min_rows_ratio * prev["rows"]:
        problems.append(
            f"recommendations fell to {rows:,} rows from {prev['rows']:,} in run {prev['run_id']} "
            f"(quality.min_rows_ratio {cfg.min_rows_ratio})"
        )
    before = _metric(spark, database, prev[C.RUN_DATE], model, cfg)
    if before and value is not None and value < (1 - cfg.max_metric_drop) * before:
        problems.append(
            f"{model} {key} fell to {value:.4f} from {before:.4f} in run {prev['run_id']} "
            f"(quality.max_metric_drop {cfg.max_metric_drop})"
        )
    return problems
