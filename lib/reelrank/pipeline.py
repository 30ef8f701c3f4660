"""The nightly run: ingest → matrix → neighbours → factorize → features → train → score → evaluate → publish.

Each stage is a function of a :class:`RunContext`, so the stages run together (``nightly``) or as
separate spark-submit jobs that share the run's state on disk. Models are fitted twice: on the
history before each user's most recent interactions (labelled training shards, and every model
evaluated on the holdout) and on all interactions (tonight's recommendations). Tables are staged in
fresh directories and published together by the last stage, so a failed run leaves the previous
output untouched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reelrank import columns as C
from reelrank import evaluate, factorize, features, ingest, matrix, neighbours, quality, report, score, sources, splits, train
from reelrank.config import Config
from reelrank.loader import shard_schema
from reelrank.runs import RunRecord, StageTimer
from reelrank.warehouse import RunOutputs, latest_partition

log = logging.getLogger("reelrank")


class RunFailed(RuntimeError):
    """The run did not publish; the previous output is unchanged."""


@dataclass
class RunContext:
    """One run's identity and state: staged tables, work files, the run record."""

    spark: SparkSession
    cfg: Config
    record: RunRecord
    outputs: RunOutputs = field(init=False)
    report: Path | None = None

    def __post_init__(self) -> None:
        self.outputs = RunOutputs(self.spark, self.cfg, self.record.run_date, self.record.run_id)

    @property
    def db(self) -> str:
        return self.cfg.warehouse.database

    @property
    def work(self) -> Path:
        return self.cfg.data_dir / "runs" / self.record.run_id

    @classmethod
    def start(cls, spark: SparkSession, cfg: Config, run_date: date) -> "RunContext":
        """A new attempt for ``run_date``; later stage jobs of that date pick it up."""
        ctx = cls(spark, cfg, RunRecord(run_date=run_date, config_hash=cfg.fingerprint(), source=cfg.source.kind))
        ctx.work.mkdir(parents=True, exist_ok=True)
        _pointer(cfg, run_date).write_text(ctx.record.run_id)
        ctx.save_state()
        return ctx

    @staticmethod
    def resumable(cfg: Config, run_date: date) -> bool:
        """An unpublished attempt of ``run_date`` made with the same settings exists."""
        pointer = _pointer(cfg, run_date)
        if not pointer.exists():
            return False
        state_file = cfg.data_dir / "runs" / pointer.read_text().strip() / "state.json"
        if not state_file.exists():
            return False
        state = json.loads(state_file.read_text())
        if state.get("published") or state.get("outputs_hash") != cfg.fingerprint(exclude=_NOT_OUTPUTS):
            log.info("not resuming run %s: %s", state["run_id"],
                     "already published" if state.get("published") else "its config differs")
            return False
        return True

    @classmethod
    def resume(cls, spark: SparkSession, cfg: Config, run_date: date) -> "RunContext":
        """The latest attempt for ``run_date`` (for a single stage job after earlier ones)."""
        pointer = _pointer(cfg, run_date)
        if not pointer.exists():
            raise RunFailed(f"no run started for {run_date} under {cfg.data_dir}: run the ingest stage (or nightly) first")
        state = json.loads((cfg.data_dir / "runs" / pointer.read_text().strip() / "state.json").read_text())
        rec = RunRecord(run_date=run_date, config_hash=state["config_hash"], source=state["source"], run_id=state["run_id"])
        rec.stages = [StageTimer(**s) for s in state["stages"]]
        ctx = cls(spark, cfg, rec)
        for table in state["staged"]:
            ctx.outputs.staged[table] = (ctx.outputs.location(table), None)
        return ctx

    def save_state(self, published: bool = False) -> None:
        state = {"published": published, "outputs_hash": self.cfg.fingerprint(exclude=_NOT_OUTPUTS),
            "run_id": self.record.run_id, "config_hash": self.record.config_hash, "source": self.record.source,
            "stages": [vars(s) for s in self.record.stages], "staged": sorted(self.outputs.staged),
        }
        (self.work / "state.json").write_text(json.dumps(state, indent=1))

    def table(self, name: str) -> DataFrame:
        """A table this run staged (read back from its directory)."""
        return self.spark.read.parquet(self.outputs.location(name))

    def put(self, name: str, df: DataFrame) -> DataFrame:
        """Keep an intermediate frame for later stages (not a warehouse table) and return it read back."""
        path = str(self.work / "frames" / name)
        df.write.mode("overwrite").parquet(path)
        return self.spark.read.parquet(path)

    def get(self, name: str) -> DataFrame:
        return self.spark.read.parquet(str(self.work / "frames" / name))

    def shards(self, split: str) -> str:
        return str(self.work / "shards" / split)

    @property
    def model_path(self) -> Path:
        return self.work / "model" / f"{self.cfg.train.model}.pt"

    @property
    def model_name(self) -> str:
        return f"{self.cfg.train.model}@{self.record.run_id}"


_NOT_OUTPUTS = ("quality", "report")  # sections that change no stage's output: a run may resume across them


def _pointer(cfg: Config, run_date: date) -> Path:
    path = cfg.data_dir / "runs" / f"current-{run_date.isoformat()}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def stage_ingest(ctx: RunContext, st: StageTimer) -> None:
    """Read the source, validate every row; rejects go to ``rejected_interactions`` with a reason."""
    raw = sources.read_source(ctx.spark, ctx.cfg.source, ctx.cfg.synthetic)
    raw_rows = raw.interactions.cache()
    n_input = raw_rows.count()
    accepted, rejected = ingest.validate(raw_rows, ctx.cfg.ingest)
    rejected = ctx.outputs.stage("rejected_interactions", rejected)
    accepted = ctx.put("accepted", accepted)
    if raw.items is not None:
        ctx.put("raw_items", raw.items)
    raw_rows.unpersist()
    n_acc, n_rej = accepted.count(), rejected.count()
    if n_acc + n_rej != n_input:
        raise RunFailed(f"ingest lost rows: input {n_input} != accepted {n_acc} + rejected {n_rej}")
    if n_acc == 0:
        raise RunFailed(f"no valid interactions among {n_input} input rows (see {ctx.db}.rejected_interactions)")
    st.rows, st.detail = n_acc, f"input {n_input:,} = accepted {n_acc:,} + rejected {n_rej:,}"


def stage_matrix(ctx: RunContext, st: StageTimer) -> None:
    """Stable indexes (extending the last published ones), indexed interactions, statistics, the holdout split."""
    accepted = ctx.get("accepted")
    prev_users = latest_partition(ctx.spark, ctx.db, "user_index")
    prev_items = latest_partition(ctx.spark, ctx.db, "item_index")
    user_index = ctx.outputs.stage("user_index", matrix.extend_index(accepted, prev_users, C.USER, C.USER_IDX))
    item_index = ctx.outputs.stage("item_index", matrix.extend_index(accepted, prev_items, C.ITEM, C.ITEM_IDX))
    inter = ctx.outputs.stage("interactions", matrix.index_interactions(accepted, user_index, item_index))
    raw_items = ctx.get("raw_items") if (ctx.work / "frames" / "raw_items").exists() else None
    ctx.outputs.stage("items", matrix.items_frame(raw_items, item_index))
    ctx.outputs.stage("user_stats", matrix.entity_stats(inter, C.USER, C.USER_IDX))
    ctx.outputs.stage("item_stats", matrix.entity_stats(inter, C.ITEM, C.ITEM_IDX))
    ratings = inter.select(C.USER_IDX, C.ITEM_IDX, C.RATING, C.TS)
    history, holdout = splits.leave_last_by_time(ratings, ctx.cfg.evaluate.holdout_per_user)
    ctx.put("history", history)
    holdout = ctx.put("holdout", holdout)
    st.rows = inter.count()
    st.detail = f"{user_index.count():,} users × {item_index.count():,} items, holdout {holdout.count():,}"


def stage_neighbours(ctx: RunContext, st: StageTimer) -> None:
    """Top-k Pearson neighbours, item-item and user-user on all ratings, item-item on the history."""
    nb = ctx.cfg.neighbours
    ratings = ctx.table("interactions")
    item_nb = neighbours.neighbour_lists(ratings, "item", nb)
    user_nb = neighbours.neighbour_lists(ratings, "user", nb)
    item_nb = ctx.outputs.stage("item_neighbours", _neighbour_ids(item_nb, ctx.table("item_index"), C.ITEM, C.ITEM_IDX))
    user_nb = ctx.outputs.stage("user_neighbours", _neighbour_ids(user_nb, ctx.table("user_index"), C.USER, C.USER_IDX))
    hist_nb = ctx.put("item_nb_history", neighbours.neighbour_lists(ctx.get("history"), "item", nb))
    st.rows = item_nb.count() + user_nb.count()
    st.detail = f"top-{nb.top_k} Pearson item-item and user-user; history item-item {hist_nb.count():,}"


def stage_factorize(ctx: RunContext, st: StageTimer) -> None:
    """ALS on all ratings (factors published) and on the history; top-N ALS candidates from each."""
    cfg = ctx.cfg
    ratings = ctx.table("interactions").select(C.USER_IDX, C.ITEM_IDX, C.RATING, C.TS)
    n = cfg.features.als_candidates
    for name, data in (("full", ratings), ("history", ctx.get("history"))):
        model = factorize.fit_als(data, cfg.als)
        users = data.select(C.USER_IDX).distinct()
        ctx.put(f"als_recs_{name}", factorize.recommend_top_n(model, users, data.select(C.USER_IDX, C.ITEM_IDX), n))
        if name == "full":
            uf, itf = factorize.factor_frames(model)
            version = F.lit(ctx.record.run_id).alias("model_version")
            uf = ctx.outputs.stage("user_factors", uf.join(ctx.table("user_index"), C.USER_IDX).select("*", version))
            itf = ctx.outputs.stage("item_factors", itf.join(ctx.table("item_index"), C.ITEM_IDX).select("*", version))
            st.rows = uf.count() + itf.count()
    st.detail = f"rank {cfg.als.rank}, {'implicit' if cfg.als.implicit else 'explicit'}, {n} candidates per user"


def stage_features(ctx: RunContext, st: StageTimer) -> None:
    """Labelled train/val shards from the history fit; score shards from the full fit."""
    cfg = ctx.cfg
    items = ctx.table("items")
    history, holdout = ctx.get("history"), ctx.get("holdout")
    lists = features.candidate_lists(history, ctx.get("item_nb_history"), ctx.get("als_recs_history"), cfg.features,
                                     cfg.neighbours.recommend_shrinkage)
    for name, df in lists.items():
        ctx.put(f"list_{name}", df)
    learn = features.build_features(history, items, *(ctx.get(f"list_{n}") for n in lists), cfg.features, holdout)
    learn = ctx.put("learn", learn)
    is_val = features.is_validation_user(cfg.features.val_fraction)
    features.write_shards(learn.filter(~is_val), ctx.shards("train"), cfg.features)
    features.write_shards(learn.filter(is_val), ctx.shards("val"), cfg.features)
    ratings = ctx.table("interactions").select(C.USER_IDX, C.ITEM_IDX, C.RATING, C.TS)
    item_nb = ctx.table("item_neighbours")
    serve = features.candidate_lists(ratings, item_nb, ctx.get("als_recs_full"), cfg.features, cfg.neighbours.recommend_shrinkage)
    features.write_shards(features.build_features(ratings, items, *serve.values(), cfg.features), ctx.shards("score"), cfg.features)
    n_score = ctx.spark.read.parquet(ctx.shards("score")).count()
    n_learn = learn.count()
    st.rows = n_learn + n_score
    st.detail = f"{n_learn:,} labelled + {n_score:,} to score, shards in {ctx.work / 'shards'}"


def stage_train(ctx: RunContext, st: StageTimer) -> None:
    """Train the ranker on the shards through Petastorm."""
    n_users, n_items = ctx.table("user_index").count(), ctx.table("item_index").count()
    result = train.train(ctx.shards("train"), ctx.shards("val"), ctx.cfg.train, ctx.model_path, n_users, n_items)
    report.save_train_history(ctx.work / "train_history.json", result.train_loss, result.val_loss)
    st.rows = shard_schema(ctx.shards("train"))[1]
    st.detail = (f"{ctx.cfg.train.model} on {result.device}, {len(result.train_loss)} epochs, loss "
                 f"{result.train_loss[0]:.4f} → {result.train_loss[-1]:.4f}, {result.samples_per_s:,.0f} samples/s")


def _model_bytes(ctx: RunContext) -> bytes:
    from reelrank.models import load

    return load(ctx.model_path).to_bytes()


def stage_score(ctx: RunContext, st: StageTimer) -> None:
    """Score every candidate in Spark and stage the top-N per user with original ids."""
    scored = score.score_candidates(ctx.spark.read.parquet(ctx.shards("score")), _model_bytes(ctx))
    best = score.top_n(scored, ctx.cfg.score.top_n)
    recs = score.with_original_ids(best, ctx.table("user_index"), ctx.table("item_index"), ctx.model_name)
    recs = ctx.outputs.stage("recommendations", recs)
    st.rows = recs.count()
    st.detail = f"top {ctx.cfg.score.top_n} per user, model {ctx.model_name}"


_METRICS_SCHEMA = T.StructType(
    [
        T.StructField(C.MODEL, T.StringType()),
        T.StructField("metric", T.StringType()),
        T.StructField("k", T.IntegerType()),
        T.StructField("value", T.DoubleType()),
        T.StructField("users", T.LongType()),
    ]
)


def stage_evaluate(ctx: RunContext, st: StageTimer) -> None:
    """Each model's top-k for the validation users against their held-out interactions; rating RMSE/MAE."""
    cfg = ctx.cfg
    ks, kmax = cfg.evaluate.ks, max(cfg.evaluate.ks)
    val_rows = ctx.spark.read.parquet(ctx.shards("val"))
    val_users = val_rows.select(C.USER_IDX).distinct()
    holdout = ctx.get("holdout")
    truth = holdout.filter(F.col(C.RATING) >= cfg.evaluate.relevance_threshold).join(val_users, C.USER_IDX)
    n_users = truth.select(C.USER_IDX).distinct().count()
    lists = {name: ctx.get(f"list_{name}") for name in ("popular", "item_neighbours", "als")}
    lists[cfg.train.model] = score.top_n(score.score_candidates(val_rows, _model_bytes(ctx)), kmax)
    rows = []
    for name, recs in lists.items():
        recs = recs.join(val_users, C.USER_IDX).filter(F.col(C.RANK) <= kmax)
        for metric, value in evaluate.ranking_metrics(recs, truth, ks, user_col=C.USER_IDX, item_col=C.ITEM_IDX).items():
            m, _, k = metric.partition("@")
            rows.append((name, m, int(k) if k else None, float(value), n_users))
    preds = neighbours.predict(ctx.get("history"), holdout, "item", cfg.neighbours, mode="topk",
                               neighbours=ctx.get("item_nb_history"))
    n_rated = holdout.select(C.USER_IDX).distinct().count()
    for metric, value in evaluate.rating_metrics(preds, label_col=C.RATING, prediction_col=C.PREDICTION).items():
        rows.append(("item_neighbours", metric, None, float(value), n_rated))
    metrics = ctx.outputs.stage("metrics", ctx.spark.createDataFrame(rows, _METRICS_SCHEMA))
    st.rows = metrics.count()
    ndcg = {r[0]: r[3] for r in rows if r[1] == "ndcg" and r[2] == ks[0]}
    st.detail = f"ndcg@{ks[0]} on {n_users:,} users: " + ", ".join(f"{m} {v:.3f}" for m, v in ndcg.items())


def stage_publish(ctx: RunContext, st: StageTimer) -> None:
    """Check tonight's output against the last published run, then swap every staged partition in."""
    cfg = ctx.cfg
    rows = ctx.table("recommendations").count()
    mine = ctx.table("metrics").filter(F.col(C.MODEL) == cfg.train.model).collect()
    tonight = {f"{r['metric']}@{r['k']}": r["value"] for r in mine}
    users = max((r["users"] or 0 for r in mine if r["metric"] == cfg.quality.metric), default=0)
    problems = quality.check(ctx.spark, ctx.db, cfg.quality, rows, tonight, cfg.train.model, users)
    if problems:
        raise quality.QualityGateFailed("quality gate: " + "; ".join(problems))
    published = ctx.outputs.publish()
    st.rows, st.detail = len(published), f"{len(published)} tables at run_date={ctx.record.run_date}"


def write_run_report(ctx: RunContext) -> Path | None:
    """The run's HTML report next to its outputs; a plotting failure is logged, never fails a published run."""
    cfg, db = ctx.cfg, ctx.db
    try:
        metrics = (
            ctx.spark.table(f"{db}.metrics").select(C.RUN_DATE, C.MODEL, "metric", "k", "value")
            .orderBy(F.col(C.RUN_DATE).desc()).limit(cfg.report.history_runs * 64).toPandas()
        )
        hist_file = ctx.work / "train_history.json"
        path = report.write_report(
            report.report_dir(cfg.data_dir, ctx.record.run_date, ctx.record.run_id),
            title=f"reelrank run {ctx.record.run_id} ({ctx.record.run_date})",
            summary={
                "run": ctx.record.run_id, "run date": str(ctx.record.run_date), "model": ctx.model_name,
                "source": ctx.record.source, "config": cfg.origin, "warehouse": str(cfg.data_dir / "warehouse"),
                **{s.name: f"{s.rows:,} rows, {s.seconds:.1f} s" for s in ctx.record.stages},
            },
            metrics_history=metrics, metric=cfg.quality.metric, k=cfg.quality.k,
            recommendations=ctx.table("recommendations"), item_stats=ctx.table("item_stats"),
            train_history=json.loads(hist_file.read_text()) if hist_file.exists() else None,
        )
        log.info("report     %s", path)
        return path
    except Exception as e:  # the run is already published; the report is a convenience
        log.warning("could not write the run report: %s", e)
        return None


STAGES: dict[str, Callable[[RunContext, StageTimer], None]] = {
    "ingest": stage_ingest,
    "matrix": stage_matrix,
    "neighbours": stage_neighbours,
    "factorize": stage_factorize,
    "features": stage_features,
    "train": stage_train,
    "score": stage_score,
    "evaluate": stage_evaluate,
    "publish": stage_publish,
}


# What each stage leaves behind: warehouse tables staged for this run, frames, shards, the model.
STAGE_OUTPUTS: dict[str, dict[str, list[str]]] = {
    "ingest": {"tables": ["rejected_interactions"], "frames": ["accepted"]},
    "matrix": {"tables": ["user_index", "item_index", "interactions", "items", "user_stats", "item_stats"],
               "frames": ["history", "holdout"]},
    "neighbours": {"tables": ["item_neighbours", "user_neighbours"], "frames": ["item_nb_history"]},
    "factorize": {"tables": ["user_factors", "item_factors"], "frames": ["als_recs_full", "als_recs_history"]},
    "features": {"frames": ["list_als", "list_item_neighbours", "list_popular", "learn"], "shards": ["train", "val", "score"]},
    "train": {"model": ["model"]},
    "score": {"tables": ["recommendations"]},
    "evaluate": {"tables": ["metrics"]},
}


def outputs_complete(ctx: RunContext, name: str) -> bool:
    """Whether every output of stage ``name`` exists for this run and was written to the end."""
    outputs = STAGE_OUTPUTS.get(name)
    if outputs is None:
        return False
    dirs = [Path(ctx.outputs.location(t).removeprefix("file:")) for t in outputs.get("tables", [])]
    dirs += [ctx.work / "frames" / f for f in outputs.get("frames", [])]
    dirs += [Path(ctx.shards(s)) for s in outputs.get("shards", [])]
    if outputs.get("model") and not (ctx.model_path.exists() and ctx.model_path.with_suffix(".json").exists()):
        return False
    return all((d / "_SUCCESS").exists() for d in dirs)


def _run_stages(ctx: RunContext, names: list[str], resume: bool = False) -> RunContext:
    done = {s.name for s in ctx.record.stages}
    current = names[0]
    try:
        for current in names:
            if resume and current in done and outputs_complete(ctx, current):
                log.info("%-11s skipped: outputs of run %s complete", current, ctx.record.run_id)
                continue
            ctx.record.stages = [s for s in ctx.record.stages if s.name != current]
            with ctx.record.stage(current) as st:
                STAGES[current](ctx, st)
            ctx.save_state()
    except Exception as e:
        ctx.record.finish("failed", f"{current}: {type(e).__name__}: {e}")
        log.error("run %s failed in stage %s: %s", ctx.record.run_id, current, e)
        try:
            ctx.record.save(ctx.spark, ctx.db)
        except Exception as save_error:  # the run already failed; keep its original error
            log.error("could not record the failed run: %s", save_error)
        raise RunFailed(f"run {ctx.record.run_id} failed in {current}: {e} (nothing published; previous output unchanged)") from e
    if "publish" in names:
        ctx.record.finish("published")
        ctx.record.save(ctx.spark, ctx.db)
        ctx.save_state(published=True)
        ctx.report = write_run_report(ctx)
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


def _neighbour_ids(nb: DataFrame, index: DataFrame, id_col: str, idx_col: str) -> DataFrame:
    """Neighbour lists with original ids next to the indexes."""
    ids = index.select(F.col(idx_col).alias("_idx"), F.col(id_col).alias("_id"))
    return (
        nb.join(F.broadcast(ids.withColumnRenamed("_id", "entity_id")), F.col("entity_idx") == F.col("_idx"))
        .drop("_idx")
        .join(F.broadcast(ids.withColumnRenamed("_id", "neighbour_id")), F.col("neighbour_idx") == F.col("_idx"))
        .select("entity_id", "neighbour_id", "similarity", "support", C.RANK, "entity_idx", "neighbour_idx")
    )


def summary(ctx: RunContext) -> str:
    """What a person reads at the end: where the outputs are and how to query them."""
    db, run_date = ctx.db, ctx.record.run_date
    return "\n".join(
        [
            f"run {ctx.record.run_id} published run_date={run_date} in {ctx.record.seconds:.0f} s",
            f"warehouse: {ctx.cfg.data_dir / 'warehouse'} (metastore: {ctx.cfg.warehouse.metastore}, database {db})",
            "tables: " + ", ".join(f"{db}.{t}" for t in sorted(ctx.outputs.staged)) + f", {db}.runs",
            "query them with:",
            f"  reelrank query \"SELECT user_id, item_id, rank, score FROM {db}.recommendations "
            f"WHERE run_date = DATE'{run_date}' ORDER BY user_id, rank LIMIT 20\"",
            f"  reelrank query \"SELECT model, metric, k, value FROM {db}.metrics WHERE run_date = DATE'{run_date}' ORDER BY metric, model\"",
            f"report: {ctx.report}" if ctx.report else "report: not written (see the log)",
        ]
    )
