"""What a person reads at the end of ``reelrank nightly``: the run, where its outputs are and how to query them."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from reelrank.config import Config, default_conf_dir
from reelrank.runs import process_seconds
from reelrank.runstate import RunContext
from reelrank.warehouse import storage


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
