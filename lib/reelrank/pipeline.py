"""The nightly run: ingest → matrix → neighbours → candidates → features → train → evaluate → score → publish.

Each stage is a function of a :class:`~reelrank.runstate.RunContext` and a :class:`~reelrank.runstate.StageIO`
that reads and writes only what :mod:`reelrank.catalog` declares for it, so the stages run together
(``nightly``) or as separate spark-submit jobs that share the run's state on disk, and ``--resume`` knows from
the declarations alone which stages are complete. Candidate sources are fitted twice: on the history before
each user's most recent interactions (labelled training shards, and every model evaluated on the holdout) and
on all interactions (tonight's recommendations). Tables are staged in fresh directories and published together
by the last stage, so a failed run leaves the previous output untouched.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from reelrank import (
    candidates,
    catalog,
    evaluate,
    faults,
    features,
    ingest,
    matrix,
    neighbours,
    quality,
    report,
    score,
    sources,
    splits,
    storage,
    train,
    warehouse,
)
from reelrank import columns as C
from reelrank.config import Config, default_conf_dir
from reelrank.loader import shard_schema
from reelrank.runs import StageTimer, process_seconds
from reelrank.runstate import RunContext, RunFailed, StageIO, collect_work
from reelrank.sources import ITEMS_SCHEMA

log = logging.getLogger("reelrank")

__all__ = ["RunContext", "RunFailed", "STAGES", "run_nightly", "run_stage", "summary"]

def stage_ingest(ctx: RunContext, io: StageIO, st: StageTimer) -> None:
    """Read the source, validate every row against its rating scale and the run date; rejects go to
    ``rejected_interactions`` with a reason, and too many invalid rows fail the run before anything is published."""
    cfg = ctx.cfg
    raw = sources.read_source(ctx.spark, cfg.source, cfg.synthetic)
    raw_rows = raw.interactions.cache()
    n_input = raw_rows.count()
    scale = sources.rating_scale(cfg.source.kind, cfg.ingest)
    # annotated once (its duplicate window is a shuffle of every row), then split into the two tables
    marked = ingest.annotate(raw_rows, cfg.ingest, scale, ctx.record.run_date).persist(StorageLevel.MEMORY_AND_DISK)
    accepted, rejected = ingest.split(marked)
    rejected = io.write("rejected_interactions", rejected)
    accepted = io.write("accepted", accepted)
    io.write("raw_items", raw.items if raw.items is not None else ctx.spark.createDataFrame([], ITEMS_SCHEMA))
    marked.unpersist()
    raw_rows.unpersist()
    counts = ingest.summarize(accepted, rejected)
    n_acc, n_rej = counts[ingest.ACCEPTED], counts[ingest.REJECTED]
    reasons = ", ".join(f"{r} {counts[r]:,}" for r in ingest.REASONS if counts[r])
    st.rows = n_acc
    st.detail = f"input {n_input:,} = accepted {n_acc:,} + rejected {n_rej:,}" + (f" ({reasons})" if reasons else "")
    if n_acc + n_rej != n_input:
        raise RunFailed(f"ingest lost rows: input {n_input} != accepted {n_acc} + rejected {n_rej}")
    try:
        ingest.check_rejected_share(counts, cfg.ingest, ctx.location("rejected_interactions"))
    except ingest.TooManyRejected as e:
        raise RunFailed(str(e)) from None
    if n_acc == 0:
        where = f" of {cfg.source.input}" if cfg.source.input else ""
        raise RunFailed(f"no valid interactions among {n_input:,} input rows{where} "
                        f"(see {ctx.location('rejected_interactions')})")
    invalid = sum(counts[r] for r in ingest.INVALID_REASONS)
    if invalid:
        log.warning("ingest: %s of %s input rows are invalid (ratings checked against %s); see %s", f"{invalid:,}",
                    f"{n_input:,}", scale.describe(), ctx.location("rejected_interactions"))


def stage_matrix(ctx: RunContext, io: StageIO, st: StageTimer) -> None:
    """Stable indexes (extending the last published ones), indexed interactions, statistics, the holdout split."""
    accepted = io.read("accepted")
    user_index = io.write("user_index", matrix.extend_index(accepted, io.published("user_index"), C.USER, C.USER_IDX))
    item_index = io.write("item_index", matrix.extend_index(accepted, io.published("item_index"), C.ITEM, C.ITEM_IDX))
    inter = io.write("interactions", matrix.index_interactions(accepted, user_index, item_index))
    io.write("items", matrix.items_frame(io.read("raw_items"), item_index))
    io.write("user_stats", matrix.entity_stats(inter, C.USER, C.USER_IDX))
    io.write("item_stats", matrix.entity_stats(inter, C.ITEM, C.ITEM_IDX))
    ev = ctx.cfg.evaluate
    history, holdout = splits.holdout_split(_ratings(inter), ev.holdout, ev.holdout_per_user)
    io.write("history", history)
    holdout = io.write("holdout", holdout)
    st.rows = inter.count()
    st.detail = f"{user_index.count():,} users × {item_index.count():,} items, holdout {holdout.count():,}"


def stage_neighbours(ctx: RunContext, io: StageIO, st: StageTimer) -> None:
    """Top-k Pearson user-user neighbours on all ratings (item-item lists come from the item-neighbour source)."""
    nb = ctx.cfg.neighbours
    user_nb = neighbours.neighbour_lists(io.read("interactions"), "user", nb)
    user_nb = io.write("user_neighbours", _neighbour_ids(user_nb, io.read("user_index"), C.USER, C.USER_IDX))
    st.rows = user_nb.count()
    first = user_nb.select(neighbours.SAMPLED, neighbours.CAPPED_SHARE).first()
    how = (f"on down-sampled ratings ({first[1]:.1%} of the items capped: co-rating work over exact_work_budget)"
           if first is not None and first[0] else "exact")
    st.detail = f"top-{nb.top_k} Pearson user-user, {how}"


def stage_candidates(ctx: RunContext, io: StageIO, st: StageTimer) -> None:
    """Fit every configured candidate source on the history and on all ratings; keep each one's top-n lists.

    The full fit's neighbour lists and factors are published; the history fit's item lists feed rating metrics.
    """
    cfg = ctx.cfg
    names = cfg.candidates.sources
    published = {"item_neighbours": lambda df: _neighbour_ids(df, io.read("item_index"), C.ITEM, C.ITEM_IDX),
                 "user_factors": lambda df: _with_ids(df, io.read("user_index"), C.USER_IDX, ctx.record.run_id),
                 "item_factors": lambda df: _with_ids(df, io.read("item_index"), C.ITEM_IDX, ctx.record.run_id)}
    kept_from_history = {"item_neighbours": "item_nb_history"}
    rows: dict[tuple[str, str], int] = {}
    seconds: dict[str, float] = {}
    seq_dir = storage.makedirs(io.path("sequences"))
    from_history: dict[str, candidates.CandidateSource] = {}
    fit_seconds: dict[str, float] = {}
    served_names: list[str] = []
    fits = {"history": "the history (lists evaluated on the holdout, and the ranker's training candidates)",
            "full": "all ratings (the lists scored and published)"}
    for split, data in (("history", io.read("history")), ("full", _ratings(io.read("interactions")))):
        users = data.select(C.USER_IDX).distinct()
        log.info("candidates: fitting %s on %s", ", ".join(names), fits[split])
        for name in names:
            started = time.perf_counter()
            why = candidates.serves_from_history(name, cfg, fit_seconds[name]) if split == "full" else None
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
            fit_seconds.setdefault(name, fitted - started)
            for table, df in source.tables().items():
                if split == "full":
                    io.write(table, published[table](df))
                elif table in kept_from_history:
                    io.write(kept_from_history[table], df)
            recs = source.recommend(users, candidates.list_length(cfg, name))
            recs = io.write(f"candidates_{split}", recs, part=name)
            rows[split, name] = recs.count()
            done = time.perf_counter()
            seconds[name] = seconds.get(name, 0.0) + done - started
            log.info("candidates: %s on the %s: %s lists in %.1f s (fit %.1f s, lists %.1f s)", name, split,
                     f"{rows[split, name]:,}", done - started, fitted - started, done - fitted)
    st.rows = sum(rows.values())
    st.detail = "per user from the full fit (seconds for both fits): " + ", ".join(
        f"{name} {rows['full', name]:,} ({seconds[name]:.0f} s)" for name in names) + (
        f"; served from the history fit: {', '.join(served_names)}" if served_names else "")


def stage_features(ctx: RunContext, io: StageIO, st: StageTimer) -> None:
    """Labelled train/val shards from the history fit's candidates; score shards from the full fit's."""
    cfg = ctx.cfg
    items = io.read("items")
    history, holdout = io.read("history"), io.read("holdout")
    lists = {name: io.read("candidates_history", part=name) for name in features.SOURCES}
    learn = io.write("learn", features.build_features(history, items, lists, features.missing_rank(cfg), holdout))
    is_val = features.is_validation_user(cfg.features.val_fraction)
    features.write_shards(learn.filter(~is_val), io.path("shards_train"), cfg.features)
    features.write_shards(learn.filter(is_val), io.path("shards_val"), cfg.features)
    ratings = _ratings(io.read("interactions"))
    serve = {name: io.read("candidates_full", part=name) for name in features.SOURCES}
    score_shards = io.path("shards_score")
    features.write_shards(features.build_features(ratings, items, serve, features.missing_rank(cfg)), score_shards,
                          cfg.features)
    n_score = ctx.spark.read.parquet(score_shards).count()
    n_learn = learn.count()
    st.rows = n_learn + n_score
    st.detail = f"{n_learn:,} labelled + {n_score:,} to score, shards in {storage.join(ctx.work, 'shards')}"


def stage_train(ctx: RunContext, io: StageIO, st: StageTimer) -> None:
    """Train the ranker on the shards through Petastorm."""
    n_users, n_items = io.read("user_index").count(), io.read("item_index").count()
    train_dir = io.path("shards_train")
    result = train.train(train_dir, io.path("shards_val"), ctx.cfg.train, _model_file(ctx, io), n_users, n_items)
    st.rows = shard_schema(train_dir)[1]
    st.detail = (f"{ctx.cfg.train.model} on {result.device}, {len(result.train_loss)} epochs, loss "
                 f"{result.train_loss[0]:.4f} → {result.train_loss[-1]:.4f}, {result.samples_per_s:,.0f} samples/s")


def _model_file(ctx: RunContext, io: StageIO) -> str:
    return storage.join(io.path("model"), f"{ctx.cfg.train.model}.pt")


def _model_bytes(ctx: RunContext, io: StageIO) -> bytes:
    from reelrank.models import load

    return load(_model_file(ctx, io)).to_bytes()


def stage_score(ctx: RunContext, io: StageIO, st: StageTimer) -> None:
    """Tonight's top-N per user with original ids, from the champion list: the ranker scoring every candidate in
    Spark, or the candidate source that beat it (its list fitted on all interactions)."""
    cfg = ctx.cfg
    champion = _champion(io)
    if champion.model == cfg.train.model:
        best = score.top_n(score.score_candidates(io.read("shards_score"), _model_bytes(ctx, io)), cfg.score.top_n)
    else:
        best = io.read("candidates_full", part=champion.model).where(F.col(C.RANK) <= cfg.score.top_n)
    recs = score.with_original_ids(best, io.read("user_index"), io.read("item_index"), champion.model,
                                   ctx.record.run_id)
    recs = io.write("recommendations", recs)
    st.rows = recs.count()
    st.detail = f"top {cfg.score.top_n} per user from {champion.model} (fitted by run {ctx.record.run_id})"


def _champion(io: StageIO) -> quality.Champion:
    row = io.read("champion").first()
    if row is None:
        raise RunFailed("the champion frame of this run is empty: rerun the evaluate stage")
    return quality.Champion(row["model"], row["why"])


def stage_evaluate(ctx: RunContext, io: StageIO, st: StageTimer) -> None:
    """Every candidate source's and the ranker's top-k for the validation users against their held-out
    interactions; rating RMSE/MAE of the item neighbours."""
    cfg = ctx.cfg
    ks, kmax = cfg.evaluate.ks, max(cfg.evaluate.ks)
    val_rows = io.read("shards_val")
    val_users = val_rows.select(C.USER_IDX).distinct()
    holdout = io.read("holdout")
    truth = holdout.filter(F.col(C.RATING) >= cfg.evaluate.relevance_threshold).join(val_users, C.USER_IDX)
    n_users = truth.select(C.USER_IDX).distinct().count()
    lists = {name: io.read("candidates_history", part=name) for name in io.parts("candidates_history")}
    lists[cfg.train.model] = score.top_n(score.score_candidates(val_rows, _model_bytes(ctx, io)), kmax)
    rows = []
    per_user = {}
    truth_pdf = truth.select(C.USER_IDX, C.ITEM_IDX).toPandas()
    for name, recs in lists.items():
        recs = recs.join(val_users, C.USER_IDX).filter(F.col(C.RANK) <= kmax).cache()
        metrics = evaluate.ranking_metrics(recs, truth, ks, user_col=C.USER_IDX, item_col=C.ITEM_IDX)
        rows += evaluate.metric_rows(name, metrics, n_users)
        if cfg.quality.metric in evaluate.PER_USER_METRICS:
            per_user[name] = evaluate.per_user_ranking(recs.toPandas(), truth_pdf, cfg.quality.k)[
                evaluate.PER_USER_METRICS[cfg.quality.metric]].sort_index().to_numpy()
        recs.unpersist()
    preds = neighbours.predict(io.read("history"), holdout, "item", cfg.neighbours, mode="topk",
                               neighbours=io.read("item_nb_history")).cache()
    n_rated = holdout.select(C.USER_IDX).distinct().count()
    rating = evaluate.rating_metrics(preds)
    rows += evaluate.metric_rows("item_neighbours", rating, n_rated)
    fallback = neighbours.fallback_rate(preds)
    preds.unpersist()
    metrics_df = io.write("metrics", evaluate.metrics_frame(ctx.spark, rows))
    gate = {r[0]: (r[3], r[4]) for r in rows if r[1] == cfg.quality.metric and r[2] == cfg.quality.k}
    champion = quality.choose_champion(gate, cfg.train.model, cfg.quality, per_user or None)
    io.write("champion", ctx.spark.createDataFrame([(champion.model, champion.why)], "model STRING, why STRING"))
    log.info("champion   %s", champion.why)
    st.rows = metrics_df.count()
    ndcg = {r[0]: r[3] for r in rows if r[1] == "ndcg" and r[2] == ks[0]}
    st.detail = (f"ndcg@{ks[0]} on {n_users:,} users: " + ", ".join(f"{m} {v:.3f}" for m, v in ndcg.items())
                 + f"; item-neighbour rmse {rating['rmse']:.3f} ({fallback:.1%} fell back to a mean); "
                 f"publishing {champion.model}")


def stage_publish(ctx: RunContext, io: StageIO, st: StageTimer) -> None:
    """Check tonight's output against the last published run, then swap every staged partition in."""
    cfg = ctx.cfg
    champion = _champion(io)
    ctx.record.published_model, ctx.record.published_why = champion.model, champion.why
    rows = io.read("recommendations").count()
    mine = io.read("metrics").filter(F.col(C.MODEL) == champion.model).collect()
    tonight = {f"{r['metric']}@{r['k']}": r["value"] for r in mine}
    users = max((r["users"] or 0 for r in mine if r["metric"] == cfg.quality.metric), default=0)
    ctx.gate_against = quality.last_published(ctx.spark, ctx.db)
    problems = quality.check(ctx.spark, ctx.db, cfg.quality, rows, tonight, champion.model, users, ctx.gate_against)
    if problems:
        raise quality.QualityGateFailed("quality gate: " + "; ".join(problems))
    published = ctx.outputs.publish(list(catalog.TABLES))
    st.rows, st.detail = len(published), f"run_date={ctx.record.run_date}, {rows:,} recommendations"


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
    days = sorted(warehouse.published_runs(spark, db).items())[-cfg.report.history_runs:]
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
               **{s.name: f"{s.rows:,} {catalog.DECLS[s.name].counts}, {s.seconds:.1f} s" for s in ctx.record.stages}},
        metrics=metrics, metric=cfg.quality.metric, k=cfg.quality.k,
        published_model=ctx.record.published_model or cfg.train.model,
        baselines=tuple(n for n in cfg.candidates.sources if candidates.is_baseline(n, cfg)),
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


STAGES: dict[str, Callable[[RunContext, StageIO, StageTimer], None]] = {
    "ingest": stage_ingest,
    "matrix": stage_matrix,
    "neighbours": stage_neighbours,
    "candidates": stage_candidates,
    "features": stage_features,
    "train": stage_train,
    "evaluate": stage_evaluate,
    "score": stage_score,
    "publish": stage_publish,
}
assert tuple(STAGES) == catalog.STAGE_NAMES, "pipeline.STAGES and catalog.STAGES must list the same stages in order"


def _run_stages(ctx: RunContext, names: list[str], resume: bool = False) -> RunContext:
    """Run ``names`` in order; with ``resume``, skip a stage whose declared outputs are complete until one runs
    (every stage after a rerun one runs again, since its inputs changed).

    The attempt is recorded in ``runs`` when it starts (a killed attempt stays ``started``) and when it ends:
    ``failed``, ``staged`` (a stage job that ended well) or ``published``.
    """
    faults.propagate(ctx.spark)
    ctx.record.save(ctx.spark, ctx.db)
    current = names[0]
    rerun = False
    try:
        for current in names:
            if resume and not rerun and ctx.stage_complete(current):
                log.info("%-11s skipped: outputs of run %s complete", current, ctx.record.run_id)
                continue
            rerun = True
            ctx.record.stages = [s for s in ctx.record.stages if s.name != current]
            io = StageIO(ctx, catalog.DECLS[current])
            io.start()
            with ctx.record.stage(current, io.decl.counts) as st:
                STAGES[current](ctx, io, st)
            faults.hit(f"stage.{current}")  # a crash after the stage's work, before it is marked complete
            io.finish()
            ctx.save_state()
    except Exception as e:
        ctx.record.finish("failed", f"{current}: {type(e).__name__}: {e}")
        log.error("run %s failed in stage %s: %s", ctx.record.run_id, current, e)
        try:
            ctx.save_state()
            ctx.record.save(ctx.spark, ctx.db)
        except Exception as save_error:  # the run already failed; keep its original error
            log.error("could not record the failed run: %s", save_error)
        raise RunFailed(f"run {ctx.record.run_id} failed in {current}: {e} "
                        "(nothing published; previous output unchanged)") from e
    if "publish" not in names:
        ctx.record.finish("staged")
        ctx.record.save(ctx.spark, ctx.db)
        return ctx
    ctx.record.finish("published")
    ctx.record.save(ctx.spark, ctx.db)
    ctx.save_state(published=True)
    ctx.report = write_run_report(ctx)
    try:
        removed = collect_work(ctx.cfg, ctx.record.run_id, ctx.cfg.warehouse.grace_hours)
    except Exception as e:  # published already; a later night collects them
        log.warning("could not remove old work directories: %s", e)
    else:
        if removed:
            log.info("removed %d work folder(s) older than %g h", len(removed), ctx.cfg.warehouse.grace_hours)
    return ctx


def run_nightly(spark: SparkSession, cfg: Config, run_date: date, resume: bool = False) -> RunContext:
    """Run every stage for ``run_date`` and publish; raise :class:`RunFailed` (nothing published) on error.

    With ``resume``, an unpublished attempt of the same date and config continues: stages whose outputs
    are complete are skipped.
    """
    ctx = RunContext.resume(spark, cfg, run_date) if resume and RunContext.resumable(cfg, run_date) else None
    if ctx is None:
        ctx = RunContext.start(spark, cfg, run_date)
    log.info("run %s for %s: source %s, config %s", ctx.record.run_id, run_date, cfg.source.kind, cfg.origin)
    return _run_stages(ctx, list(STAGES), resume=resume)


def run_stage(spark: SparkSession, cfg: Config, run_date: date, name: str) -> RunContext:
    """Run one stage as its own job: ``ingest`` starts a new attempt for the date, the others continue it."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    ctx = RunContext.start(spark, cfg, run_date) if name == "ingest" else RunContext.resume(spark, cfg, run_date)
    return _run_stages(ctx, [name])


def _ratings(interactions: DataFrame) -> DataFrame:
    """What candidate sources fit on; the input position (file, row) orders interactions of the same second."""
    return interactions.select(C.USER_IDX, C.ITEM_IDX, C.RATING, C.TS, *C.origin_columns(interactions.columns))


def _with_ids(factors: DataFrame, index: DataFrame, idx_col: str, run_id: str) -> DataFrame:
    """Factors with original ids and the model version they came from."""
    return factors.join(index, idx_col).select("*", F.lit(run_id).alias(C.MODEL_VERSION))


def _neighbour_ids(nb: DataFrame, index: DataFrame, id_col: str, idx_col: str) -> DataFrame:
    """Neighbour lists with original ids next to the indexes."""
    ids = index.select(F.col(idx_col).alias("_idx"), F.col(id_col).alias("_id"))
    return (
        nb.join(F.broadcast(ids.withColumnRenamed("_id", "entity_id")), F.col("entity_idx") == F.col("_idx"))
        .drop("_idx")
        .join(F.broadcast(ids.withColumnRenamed("_id", "neighbour_id")), F.col("neighbour_idx") == F.col("_idx"))
        .select("entity_id", "neighbour_id", "similarity", "support", C.RANK, "entity_idx", "neighbour_idx",
                neighbours.SAMPLED, neighbours.CAPPED_SHARE)
    )


def summary(ctx: RunContext) -> str:
    """What a person reads at the end: where the outputs are and how to query them."""
    db, run_date = ctx.db, ctx.record.run_date
    query = f"{_command()} query {_where_args(ctx.cfg)}"
    return "\n".join(
        [
            f"run {ctx.record.run_id} published run_date={run_date}: {_took(ctx)}",
            f"published list: {ctx.record.published_model} ({ctx.record.published_why})",
            *[f"ingest: {s.detail}" for s in ctx.record.stages if s.name == "ingest"],
            f"warehouse: {storage.join(ctx.cfg.data_dir, 'warehouse')} "
            f"(metastore: {ctx.cfg.warehouse.metastore}, database {db})",
            f"tables (views of the run {db}.published_runs shows for each date): "
            + ", ".join(f"{db}.{t}" for t in sorted(ctx.stage_tables())) + f", {db}.runs",
            "query them with:",
            f"  {query} \"SELECT user_id, item_id, rank, score FROM {db}.recommendations "
            f"WHERE run_date = DATE'{run_date}' ORDER BY user_id, rank LIMIT 20\"",
            f"  {query} \"SELECT model, metric, k, value FROM {db}.metrics "
            f"WHERE run_date = DATE'{run_date}' ORDER BY metric, model\"",
            f"report: {ctx.report}" if ctx.report else "report: not written (see the log)",
        ]
    )


def _took(ctx: RunContext) -> str:
    """The command's wall time, split into the run's stages and the rest (Spark's start-up, the report)."""
    rec = ctx.record
    wall, stages = process_seconds(), sum(s.seconds for s in rec.stages)
    earlier = f"; earlier attempts of this run {rec.elapsed_before:.0f} s" if rec.elapsed_before else ""
    return (f"this command took {wall:.0f} s: stages {stages:.0f} s, Spark start-up, publishing the run record "
            f"and the report {max(wall - stages, 0):.0f} s{earlier}")


def _command() -> str:
    """The ``reelrank`` command beside this Python (a venv's bin/), so the printed queries work when pasted."""
    beside = Path(sys.executable).with_name("reelrank")
    return shlex.quote(str(beside)) if beside.exists() else "reelrank"


def _where_args(cfg: Config) -> str:
    """``--config`` (unless the default) and ``--data-dir`` of this run, for commands that must find its warehouse."""
    env_file = cfg.origin.split(" + ")[-1]
    args = f"--data-dir {shlex.quote(cfg.data_dir)}"
    if env_file and Path(env_file).resolve() != (default_conf_dir() / "local.toml").resolve():
        args = f"--config {shlex.quote(env_file)} {args}"
    return args
