"""Answers a person asks often, read with DuckDB straight from the warehouse's Parquet files, without starting
Spark (a JVM per question costs 20-40 s): the ``runs`` history for ``reelrank runs``.

Only where the files' place is certain and local: an embedded (Derby) metastore, which lives in the data dir
beside the warehouse it describes, and a local data dir. Anything else, or any surprise, returns None and the
caller asks Spark. Reading also works while a nightly runs (it holds the metastore, not the files): Spark
writes each Parquet file aside and renames it into the table's folder, so a reader sees whole files only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from reelrank import storage
from reelrank.config import Config

log = logging.getLogger(__name__)

RUNS_COLUMNS = ["run_id", "run_date", "status", "seconds", "recommendations", "published_model", "error"]
"""What ``reelrank runs`` shows, in order (the Spark path selects the same)."""


def table_files(cfg: Config, table: str) -> str | None:
    """The glob of an unpartitioned managed table's Parquet files, or None when it cannot be read directly."""
    local = storage.local_path(cfg.data_dir)
    if cfg.warehouse.metastore != "derby" or local is None:
        return None
    folder = Path(local) / "warehouse" / f"{cfg.warehouse.database}.db" / table
    if not any(folder.glob("*.parquet")):
        return None
    return str(folder / "*.parquet")


def latest_runs(cfg: Config, limit: int) -> list[tuple] | None:
    """Every run's latest row (as ``reelrank runs`` shows it), newest first; None when DuckDB cannot answer."""
    files = table_files(cfg, "runs")
    if files is None:
        return None
    try:
        import duckdb

        sql = (f"SELECT run_id, run_date, status, round(seconds, 1) AS seconds, stage_rows['score'] AS "
               f"recommendations, published_model, split_part(error, chr(10), 1) AS error FROM (SELECT *, row_number() "
               f"OVER (PARTITION BY run_id ORDER BY recorded_at DESC NULLS LAST, finished_at DESC NULLS LAST) AS "
               f"_latest FROM read_parquet(?, union_by_name = true)) WHERE _latest = 1 ORDER BY started_at DESC "
               f"LIMIT {int(limit)}")
        with duckdb.connect() as con:
            return [tuple(r) for r in con.execute(sql, [files]).fetchall()]
    except Exception as e:  # a file mid-collection, an older layout: Spark answers instead
        log.debug("DuckDB could not read %s (%s); asking Spark", files, e)
        return None
