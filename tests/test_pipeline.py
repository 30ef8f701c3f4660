"""The nightly end to end on a tiny synthetic catalogue: published shape, reruns, failures."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from datetime import date

import pytest
from pyspark.sql import functions as F

from reelrank import catalog, faults, pipeline, run_report, runstate
from reelrank import columns as C
from reelrank.warehouse import publishing, storage

pytestmark = [pytest.mark.spark, pytest.mark.slow]
DAY = date(2026, 11, 23)


@contextlib.contextmanager
def _busy_cpu():
    """Another process spinning on a core for as long as the block runs: the machine under load."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


@pytest.fixture(scope="module")
def nightly(spark, cfg):
    """Two runs of the same date, the second on a loaded machine; the second must replace the first."""
    first = pipeline.run_nightly(spark, cfg, DAY)
    recs_first = spark.table(f"{cfg.warehouse.database}.recommendations").count()
    users_first = {tuple(r) for r in spark.table(f"{cfg.warehouse.database}.user_index").drop(C.RUN_DATE).collect()}
    published_first = {name: _published(spark, cfg, name) for name in ("recommendations", "metrics")}
    with _busy_cpu():
        second = pipeline.run_nightly(spark, cfg, DAY)
    return {"first": first, "second": second, "recs_first": recs_first, "users_first": users_first,
            "published_first": published_first}


def _table(spark, cfg, name):
    return spark.table(f"{cfg.warehouse.database}.{name}").filter(F.col(C.RUN_DATE) == F.lit(DAY))


def _published(spark, cfg, name):
    """Every row of a published table for DAY but the run's identity, sorted."""
    frame = _table(spark, cfg, name).drop(C.RUN_DATE, C.MODEL_VERSION, "run_id", "recorded_at")
    return sorted(tuple(r) for r in frame.collect())


def test_the_same_night_rerun_under_load_publishes_the_same_lists_bit_for_bit(spark, cfg, nightly):
    """Nothing that decides a list reads the clock (issue 30): the rerun of the date, with another process
    spinning on a core, publishes the same items, ranks and scores, and the same metrics."""
    assert nightly["published_first"]["recommendations"], "the first night published lists"
    for name, rows in nightly["published_first"].items():
        assert _published(spark, cfg, name) == rows, name


def test_every_user_gets_top_n(spark, cfg, nightly):
    """N per user, or every unrated item when a heavy user of the tiny catalogue has fewer than N left."""
    recs = _table(spark, cfg, "recommendations")
    n_items = _table(spark, cfg, "item_index").count()
    rated = _table(spark, cfg, "interactions").groupBy(C.USER).count().toPandas().set_index(C.USER)["count"]
    got = recs.groupBy(C.USER).count().toPandas().set_index(C.USER)["count"]
    expected = (n_items - rated).clip(upper=cfg.score.top_n)
    assert len(rated) > 0 and (expected == cfg.score.top_n).mean() > 0.9
    assert got.reindex(expected.index, fill_value=0).equals(expected)
    assert set(recs.columns) >= {C.USER, C.ITEM, C.RANK, C.SCORE, C.MODEL, C.RUN_DATE}


def test_rerun_of_the_same_date_replaces(spark, cfg, nightly):
    assert _table(spark, cfg, "recommendations").count() == nightly["recs_first"]
    models = {tuple(r) for r in _table(spark, cfg, "recommendations").select(C.MODEL, C.MODEL_VERSION).distinct()
              .collect()}
    second = nightly["second"].record
    assert models == {(second.published_model, second.run_id)}  # named as metrics names it, the run beside it


def test_ranks_are_one_to_n_and_scores_non_increasing(spark, cfg, nightly):
    pdf = _table(spark, cfg, "recommendations").toPandas().sort_values([C.USER, C.RANK])
    assert pdf.groupby(C.USER)[C.RANK].apply(lambda r: list(r) == list(range(1, len(r) + 1))).all()
    assert (pdf.groupby(C.USER)[C.SCORE].apply(lambda s: (s.diff().dropna() <= 1e-12).all())).all()
    assert not pdf.duplicated([C.USER, C.ITEM]).any()


def test_no_recommendation_was_already_rated(spark, cfg, nightly):
    rated = _table(spark, cfg, "interactions").select(C.USER, C.ITEM)
    assert _table(spark, cfg, "recommendations").join(rated, [C.USER, C.ITEM]).count() == 0


def test_original_ids_are_published(spark, cfg, nightly):
    n_items = _table(spark, cfg, "item_index").count()
    counts = _table(spark, cfg, "interactions").groupBy(C.USER).count().collect()
    ids = {r[0] for r in counts if r[1] < n_items}  # users who rated every item have nothing left to get
    rec_ids = {r[0] for r in _table(spark, cfg, "recommendations").select(C.USER).distinct().collect()}
    assert rec_ids == ids and all(isinstance(i, str) for i in ids)


def test_ids_are_stable_across_runs(spark, cfg, nightly):
    users_now = {tuple(r) for r in _table(spark, cfg, "user_index").drop(C.RUN_DATE).collect()}
    assert users_now == nightly["users_first"]


def test_ingest_accounts_for_every_row(spark, cfg, nightly):
    accepted = _table(spark, cfg, "interactions").count()
    rejected = _table(spark, cfg, "rejected_interactions").count()
    assert accepted + rejected == cfg.synthetic.ratings


def test_metrics_and_run_history(spark, cfg, nightly):
    metrics = _table(spark, cfg, "metrics").toPandas()
    k = cfg.evaluate.ks[0]
    ndcg = metrics[(metrics.metric == "ndcg") & (metrics.k == k)].set_index(C.MODEL)["value"]
    assert set(cfg.candidates.sources) | {cfg.train.model} == set(ndcg.index)
    assert ((ndcg >= 0) & (ndcg <= 1)).all()
    assert {"rmse", "mae"} <= set(metrics.metric)
    runs = spark.table(f"{cfg.warehouse.database}.runs").toPandas()
    ours = runs[runs.run_id.isin([nightly["first"].record.run_id, nightly["second"].record.run_id])]
    assert sorted(ours.status) == ["published", "published", "started", "started"]  # each attempt: start and end
    ours = ours[ours.status == "published"].sort_values("recorded_at")
    stage_rows = ours.iloc[0].stage_rows
    assert stage_rows["score"] == nightly["recs_first"]
    assert set(ours.iloc[0].stage_seconds) == set(catalog.STAGE_NAMES)
    # the ranker is published unless the night's best list beats it beyond noise; runs says which and why
    for _, run in ours.iterrows():
        assert run.published_model == cfg.train.model or ndcg[run.published_model] == ndcg.max(), run
        assert run.published_model in run.published_why


def test_report_is_written(nightly):
    ctx = nightly["second"]
    assert ctx.report is not None and storage.name(ctx.report) == "report.html"
    folder = storage.parent(ctx.report)
    pngs = {n: len(storage.read_bytes(storage.join(folder, n))) for n in storage.listdir(folder) if n.endswith(".png")}
    assert set(pngs) == {f"{n}.png" for n in ("metrics", "published", "rejected", "stages", "loss", "scores",
                                               "coverage")}
    assert all(size > 1000 for size in pngs.values())
    page = storage.read_text(ctx.report)
    assert all(f'src="{name}"' in page for name in pngs) and ctx.record.run_id in page
    # the first line says what went out and why; the table names the best baseline; five users are shown
    verdict = page.split("<body>", 1)[1]
    assert verdict.startswith(f"<p class=verdict id=verdict>published {ctx.record.run_date}: the "
                              f"{ctx.record.published_model} list (")
    # the second night's gate compared with the first night; the first night's ran the absolute checks only
    first = nightly["first"]
    assert ctx.gate_against is not None and ctx.gate_against["run_id"] == first.record.run_id
    assert f"gate passed against run {first.record.run_id}" in verdict.split("</p>", 1)[0]
    earlier = first.gate_against  # None unless another test published into this session's warehouse before
    assert ("first night: only the absolute checks ran" in run_report.verdict(first)) == (earlier is None)
    assert "best baseline" in page and not re.search(r">\s*nan\s*<", page, re.IGNORECASE)
    assert page.count("<tr><th>u") == 5


def test_run_directory_holds_exactly_the_declared_outputs(cfg, nightly):
    """What the stages wrote is what the catalog declares, every output marked complete."""
    ctx = nightly["second"]
    declared = {n for n, d in catalog.DATASETS.items() if d.kind in ("frame", "frames")}
    assert set(storage.listdir(storage.join(ctx.work, "frames"))) == declared
    shards = {n.removeprefix("shards_") for n, d in catalog.DATASETS.items() if d.kind == "shards"}
    assert shards == {"train", "val", "score", "sequences"}
    assert set(storage.listdir(storage.join(ctx.work, "shards"))) == shards
    assert all(ctx.complete(name) for name, d in catalog.DATASETS.items() if d.kind != "record")
    for split in ("candidates_history", "candidates_full"):
        assert storage.listdir(ctx.location(split), dirs_only=True) == sorted(cfg.candidates.sources)


def _latest_status(spark, cfg, run_id):
    rows = spark.table(f"{cfg.warehouse.database}.runs").filter(F.col("run_id") == run_id)
    return rows.orderBy(F.col("recorded_at").desc()).first().status, rows.count()


def test_killed_in_every_stage_then_resumed_publishes_what_an_uninterrupted_run_does(spark, cfg, nightly, monkeypatch,
                                                                                       caplog):
    """A crash in the middle of each stage in turn (after it wrote something), each followed by --resume, then a
    quality-gate failure, end in the same night as an uninterrupted run; each resume skips exactly the stages that
    had ended, every attempt shows in runs (killed ones as started), and a task that fails once is retried."""
    day, db = date(2026, 11, 25), cfg.warehouse.database
    caplog.set_level("INFO", logger="reelrank")
    run_id = None
    for n, stage in enumerate(catalog.STAGE_NAMES):
        caplog.clear()
        point = {"train": "stage.train", "publish": "publish.registered#3"}.get(stage, f"write.{stage}")
        armed = f"{point}=raise" + (",score.task=raise" if stage == "score" else "")
        monkeypatch.setenv(faults.ENV, armed)
        faults.reset()
        spark.sparkContext.setJobGroup(f"killed-in-{stage}", armed)
        with pytest.raises(faults.InjectedFault, match=point.split("#")[0]):
            pipeline.run_nightly(spark, cfg, day, resume=True)
        skipped = [r.getMessage().split()[0] for r in caplog.records if "skipped: outputs of run" in r.getMessage()]
        # the previous attempt died in the stage before this one: it and every later stage run again
        assert skipped == list(catalog.STAGE_NAMES)[:max(n - 1, 0)], f"killed in {stage}"
        state = runstate._read_state(cfg, day)
        assert run_id in (None, state["run_id"]), "every resume continues the first attempt's run"
        run_id = state["run_id"]
        assert _latest_status(spark, cfg, run_id)[0] == "started"
        assert publishing.published_run(spark, db, day) is None, f"killed in {stage}: nothing may show"
        if stage == "score":  # the scoring task failed once (partition 0, attempt 0) and its retry succeeded
            tracker = spark.sparkContext.statusTracker()
            stages = [s for j in tracker.getJobIdsForGroup(f"killed-in-{stage}")
                      for s in tracker.getJobInfo(j).stageIds]
            assert sum(tracker.getStageInfo(s).numFailedTasks for s in stages if tracker.getStageInfo(s)) >= 1
    monkeypatch.delenv(faults.ENV)
    spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    # The quality gate fails the next attempt (it asks for twice the last run's NDCG, no noise allowance): nothing
    # is published, the earlier night stays as it was; --resume then reuses every verified stage and only publishes.
    before = sorted(tuple(r) for r in _table(spark, cfg, "recommendations").collect())
    caplog.clear()
    strict = cfg.replace(quality={"max_metric_drop": -1.0, "noise_z": 0.0})
    with pytest.raises(pipeline.RunFailed, match=r"quality gate: .* ndcg@10 fell"):
        pipeline.run_nightly(spark, strict, day, resume=True)
    assert sorted(tuple(r) for r in _table(spark, cfg, "recommendations").collect()) == before
    assert publishing.published_run(spark, db, day) is None
    last = spark.table(f"{db}.runs").orderBy(F.col("recorded_at").desc()).first()
    assert last.run_id == run_id and last.status == "failed" and "quality gate" in last.error
    caplog.clear()
    resumed = pipeline.run_nightly(spark, cfg, day, resume=True)
    assert resumed.record.run_id == run_id
    skipped = {r.getMessage().split()[0] for r in caplog.records if "skipped: outputs of run" in r.getMessage()}
    assert skipped == set(catalog.STAGE_NAMES) - {"publish"}
    status, rows = _latest_status(spark, cfg, run_id)
    # one started row per attempt (the killed ones have no end row), the gate's failed one, then the last outcome
    assert status == "published" and rows == len(catalog.STAGE_NAMES) + 4
    assert resumed.record.seconds >= sum(s.seconds for s in resumed.record.stages)
    for table in catalog.TABLES:
        got = spark.table(f"{db}.{table}").filter(F.col(C.RUN_DATE) == F.lit(day)).drop(C.RUN_DATE)
        want = spark.table(f"{db}.{table}").filter(F.col(C.RUN_DATE) == F.lit(DAY)).drop(C.RUN_DATE)
        assert got.count() == want.count(), table
        assert table == "rejected_interactions" or got.count() > 0, table  # the synthetic input has no bad rows
    keys = [C.USER, C.ITEM, C.RANK]
    assert (sorted(tuple(r) for r in _table(spark, cfg, "recommendations").select(*keys).collect())
            == sorted(tuple(r) for r in spark.table(f"{db}.recommendations")
                      .filter(F.col(C.RUN_DATE) == F.lit(day)).select(*keys).collect()))


def test_a_stage_job_never_touches_a_published_night(spark, cfg, nightly):
    """``reelrank stage score --date D`` on a published date is refused before it writes or records anything."""
    db = cfg.warehouse.database
    before = sorted(tuple(r) for r in _table(spark, cfg, "recommendations").collect())
    n_runs = spark.table(f"{db}.runs").count()
    with pytest.raises(pipeline.RunFailed, match=r"is published, and a stage job never changes a published night"):
        pipeline.run_stage(spark, cfg, DAY, "score")
    assert sorted(tuple(r) for r in _table(spark, cfg, "recommendations").collect()) == before
    assert spark.table(f"{db}.runs").count() == n_runs


def test_duckdb_answers_equal_spark_sql(spark, cfg, nightly):
    """Without Spark, through the publish-time manifest: ordinary queries (named columns, counts, joins, NULL
    order, x / 0) give the same columns and rows as Spark SQL."""
    from reelrank.warehouse import fastread

    db = cfg.warehouse.database
    queries = [
        f"SELECT count(*) AS n FROM {db}.recommendations",
        f"SELECT run_date, count(*) AS n FROM {db}.recommendations GROUP BY run_date ORDER BY run_date",
        f"SELECT user_id, item_id, rank, score, model, model_version FROM {db}.recommendations "
        f"ORDER BY run_date, user_id, rank LIMIT 30",
        f"SELECT * FROM {db}.metrics WHERE run_date = (SELECT max(run_date) FROM {db}.metrics) "
        f"ORDER BY model, metric, k",
        f"SELECT model, k, avg(value) AS mean, sum(value) / 0 AS nothing FROM {db}.metrics GROUP BY model, k "
        f"ORDER BY k, model",
        f"SELECT k FROM {db}.metrics ORDER BY k LIMIT 3",  # rmse and mae have no k: NULLs first, as in Spark
        f"SELECT run_id, run_date FROM {db}.published_runs ORDER BY run_date",
        f"SELECT count(*) AS n FROM {db}.rejected_interactions",
        f"SELECT m.model, count(*) AS n FROM {db}.metrics m JOIN {db}.published_runs p ON m.run_date = p.run_date "
        f"GROUP BY m.model ORDER BY m.model",
        fastread.runs_sql(db, 5),
    ]

    def rounded(rows):
        return [tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in rows]

    for sql in queries:
        fast = fastread.query(cfg, sql)
        assert fast is not None, sql
        df = spark.sql(sql)
        assert fast[0] == df.columns, sql
        assert rounded(fast[1]) == rounded([tuple(r) for r in df.collect()]), sql
    assert fastread.where(cfg, "recommendations", DAY) == publishing.partition_location(
        spark, db, "recommendations", DAY).removeprefix("file:")


def test_failed_run_leaves_published_output_intact(spark, cfg, nightly, tmp_path):
    """Last in the module: the failed attempt becomes DAY's latest (the stage-job test above needs a published one)."""
    before = sorted(tuple(r) for r in _table(spark, cfg, "recommendations").collect())
    broken = cfg.replace(source={"kind": "csv", "input": str(tmp_path / "missing.csv")})
    with pytest.raises(pipeline.RunFailed, match="missing.csv"):
        pipeline.run_nightly(spark, broken, DAY)
    assert sorted(tuple(r) for r in _table(spark, cfg, "recommendations").collect()) == before
    runs = spark.table(f"{cfg.warehouse.database}.runs").orderBy(F.col("recorded_at").desc()).first()
    assert runs.status == "failed" and "missing.csv" in runs.error
