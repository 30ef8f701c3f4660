"""A published run's HTML report: what it shows, collected from the warehouse and the run, and its first line."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from reelrank import candidates, catalog, report
from reelrank import columns as C
from reelrank.runstate import RunContext
from reelrank.warehouse import publishing, storage

log = logging.getLogger("reelrank")


def write_run_report(ctx: RunContext) -> str | None:
    """The run's HTML report next to its outputs; a plotting failure is logged, never fails a published run."""
    cfg = ctx.cfg
    try:
        model_json = storage.join(ctx.location("model"), f"{cfg.train.model}.json")
        epochs = json.loads(storage.read_text(model_json)).get("epochs") if storage.exists(model_json) else None
        path = report.write_report(report.report_dir(cfg.data_dir, ctx.record.run_date, ctx.record.run_id),
                                   report_data(ctx, epochs))
        log.info("report     %s", path)
        return path
    except Exception as e:  # the run is already published; the report is a convenience
        log.warning("could not write the run report: %s", e)
        return None


def verdict(ctx: RunContext) -> str:
    """The report's first line: what was published, which list and why, and the gate with its thresholds."""
    q, rec, prev = ctx.cfg.quality, ctx.record, ctx.gate_against
    if not q.enabled:
        gate = "gate off ([quality] enabled = false)"
    elif prev is None:
        gate = (f"first night: only the absolute checks ran (recommendations and a {q.metric}@{q.k} exist); "
                f"nothing was published before to compare with")
    else:
        gate = (f"gate passed against run {prev['run_id']} of {prev[C.RUN_DATE]}: recommendations ≥ "
                f"{q.min_rows_ratio:.0%} of its, {q.metric}@{q.k} no more than {q.max_metric_drop:.0%} below its "
                f"beyond {q.noise_z:g} standard errors")
    return f"published {rec.run_date}: the {rec.published_model} list ({rec.published_why}); {gate}"


def report_data(ctx: RunContext, epochs: list[dict] | None) -> report.ReportData:
    """Collect what the report shows from the warehouse (the last ``[report] history_runs`` dates) and this run."""
    cfg, db, spark = ctx.cfg, ctx.db, ctx.spark
    days = sorted(publishing.published_runs(spark, db).items())[-cfg.report.history_runs:]
    first = days[0][0] if days else ctx.record.run_date
    recent = F.col(C.RUN_DATE) >= F.lit(first)
    metrics = spark.table(f"{db}.metrics").filter(recent).select(C.RUN_DATE, C.MODEL, "metric", "k", "value").toPandas()
    shown = {run_id: day for day, run_id in days}
    runs = (spark.table(f"{db}.runs").filter(F.col("run_id").isin(list(shown)) & (F.col("status") == "published"))
            .select("run_id", "stage_seconds", "stage_rows").collect())
    stages = pd.DataFrame([(shown[r.run_id], name, float(sec), int((r.stage_rows or {}).get(name) or 0))
                           for r in runs for name, sec in (r.stage_seconds or {}).items()],
                          columns=[C.RUN_DATE, "stage", "seconds", "rows"])
    rejected = (spark.table(f"{db}.rejected_interactions").filter(recent).groupBy(C.RUN_DATE, C.REASON).count()
                .withColumnRenamed("count", "rows").withColumnRenamed(C.REASON, "reason").toPandas())
    recs = ctx.table("recommendations")
    times = recs.groupBy(C.ITEM).count().withColumnRenamed("count", "times_recommended")
    popularity = (ctx.table("item_stats").select(C.ITEM, "n_ratings").join(times, C.ITEM, "left")
                  .fillna({"times_recommended": 0}).toPandas())
    return report.ReportData(
        title=f"reelrank run {ctx.record.run_id} ({ctx.record.run_date})",
        verdict=verdict(ctx),
        facts={"run": ctx.record.run_id, "run date": str(ctx.record.run_date), "source": ctx.record.source,
               "config": cfg.origin, "warehouse": storage.join(cfg.data_dir, "warehouse"),
               "seconds": f"{ctx.record.seconds:.0f}",
               **{s.name: f"{s.rows:,} {catalog.stage(s.name).counts}, {s.seconds:.1f} s" for s in ctx.record.stages}},
        metrics=metrics, metric=cfg.quality.metric, k=cfg.quality.k,
        published_model=ctx.record.published_model or cfg.train.model,
        baselines=tuple(n for n in cfg.candidates.sources if candidates.is_baseline(n)),
        stages=stages, rejected=rejected,
        scores=_column(recs, C.SCORE),
        popularity=popularity, epochs=epochs, samples=_sample_users(ctx, recs),
    )


def _column(df: DataFrame, name: str) -> np.ndarray:
    pdf: pd.DataFrame = df.select(name).toPandas()
    return pdf[name].to_numpy()


def _sample_users(ctx: RunContext, recs: DataFrame) -> pd.DataFrame:
    """``report.SAMPLE_USERS`` users (the same ones every night while they exist): their latest ratings and their
    published list."""
    users = [r[0] for r in recs.select(C.USER).distinct().orderBy(F.xxhash64(C.USER), C.USER)
             .limit(report.SAMPLE_USERS).collect()]
    titles = ctx.table("items").select(C.ITEM, C.TITLE)
    latest = Window.partitionBy(C.USER).orderBy(F.col(C.TS).desc(), F.col(C.ITEM))
    history = (ctx.table("interactions").filter(F.col(C.USER).isin(users))
               .withColumn("position", F.row_number().over(latest)).filter(F.col("position") <= report.SAMPLE_HISTORY)
               .select(C.USER, F.lit("history").alias("part"), "position", C.ITEM, F.col(C.RATING).alias("value")))
    listed = recs.filter(F.col(C.USER).isin(users)).select(
        C.USER, F.lit("list").alias("part"), F.col(C.RANK).alias("position"), C.ITEM, F.col(C.SCORE).alias("value"))
    return history.unionByName(listed).join(titles, C.ITEM, "left").toPandas()
