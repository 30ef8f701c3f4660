"""The nightly run's runner: ingest → matrix → neighbours → candidates → features → train → evaluate → score → publish.

Each stage is declared beside its function in :mod:`reelrank.stages` (:class:`~reelrank.catalog.Stage`); the runner
reads its declared inputs, calls it, writes what it returns, checks it returned exactly its declared outputs and
marks them complete. So the stages run together (``nightly``) or as separate spark-submit jobs that share the run's
state on disk, and ``--resume`` knows from the declarations alone which stages are complete. Tables are staged in
fresh directories and published together by the last stage, so a failed run leaves the previous output untouched.
"""

from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import SparkSession

from reelrank import catalog, faults
from reelrank.config import Config
from reelrank.run_report import write_run_report
from reelrank.runstate import RunContext, RunFailed, StageIO, collect_work

log = logging.getLogger("reelrank")

__all__ = ["RunContext", "RunFailed", "run_nightly", "run_stage"]


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
            stage = catalog.stage(current)
            io = StageIO(ctx, stage)
            io.start()
            with ctx.record.stage(current, stage.counts) as st:
                result = stage.func(io, ctx.cfg, **io.inputs())
                io.accept(result.outputs)
                st.rows, st.detail = result.rows, result.detail
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
    return _run_stages(ctx, list(catalog.STAGE_NAMES), resume=resume)


def run_stage(spark: SparkSession, cfg: Config, run_date: date, name: str) -> RunContext:
    """Run one stage as its own job: ``ingest`` starts a new attempt for the date, the others continue it."""
    if name not in catalog.STAGE_NAMES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(catalog.STAGE_NAMES)}")
    ctx = RunContext.start(spark, cfg, run_date) if name == "ingest" else RunContext.resume(spark, cfg, run_date)
    return _run_stages(ctx, [name])
