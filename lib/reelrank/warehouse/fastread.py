"""DuckDB over the warehouse's Parquet files, without Spark (a JVM costs 15-40 s): ``reelrank query``, ``runs``
and ``where`` read through it, and only through it (``reelrank query --spark`` and the Thrift server are Spark).

The published tables are read through the manifest written at publish time (:mod:`.manifest`), and only
while it is current: otherwise :class:`PublishUnderWay` says so (no silent fall-back to another engine). The
``runs`` table (not versioned) is read from its folder, so ``reelrank runs`` works during a publish too. The SQL
is DuckDB's; the connection sorts NULLs first when ascending and gives NULL for ``x / 0``, as Spark does, so that
ordinary queries read the same under ``--spark``. Reading works while a nightly runs (it holds the metastore, not
the files): Spark writes each Parquet file aside and renames it into place, and a replaced version's files are
kept for ``[warehouse] grace_hours``.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

from reelrank.config import Config
from reelrank.warehouse import manifest, storage

log = logging.getLogger(__name__)

POINTER = "published_runs"  # warehouse.POINTER, without importing pyspark
RUNS = "runs"
"""The table of every attempt's rows (not versioned: one folder of Parquet files)."""
PUBLISH_UNDER_WAY = "publish under way"

Result = tuple[list[str], list[tuple]]
"""A query's column names and rows."""


class NotReadable(Exception):
    """The files cannot answer now; the message is the one line a user reads."""


class PublishUnderWay(NotReadable):
    """The manifest is missing or behind ``published_runs``: a publish is under way (or died before writing it)."""


def _db_folder(cfg: Config) -> Path:
    """The database's folder, when its place is certain and local: an embedded (Derby) metastore lives in the data
    dir beside the warehouse it describes; an external one may have put the database anywhere."""
    local = storage.local_path(cfg.data_dir)
    if local is None:
        raise NotReadable(f"DuckDB reads a local data dir only, not {cfg.data_dir}: use reelrank query --spark")
    if cfg.warehouse.metastore != "derby":
        raise NotReadable(f"DuckDB reads a warehouse with the embedded metastore only, not "
                          f"{cfg.warehouse.metastore}: use reelrank query --spark")
    return Path(local) / "warehouse" / f"{cfg.warehouse.database}.db"


def current_manifest(cfg: Config, retry_hint: str = ", retry or use --spark") -> manifest.Manifest:
    """The publish-time manifest while it is current; :class:`PublishUnderWay` when it is not (``retry_hint``
    ends that line), :class:`NotReadable` when nothing was ever published."""
    folder = _db_folder(cfg)
    found = manifest.read(str(folder), POINTER)
    if found is not None and found.database == cfg.warehouse.database:
        return found
    if found is None and not (folder / manifest.FILE).exists() and not manifest.pointer_dirs(str(folder), POINTER):
        raise NotReadable(f"nothing published under {cfg.data_dir} yet: run reelrank nightly first")
    raise PublishUnderWay(PUBLISH_UNDER_WAY + retry_hint)


def _runs_glob(cfg: Config) -> str | None:
    """The glob of the ``runs`` table's Parquet files, or None before the first run wrote one."""
    folder = _db_folder(cfg) / RUNS
    return str(folder / "*.parquet") if any(folder.glob("*.parquet")) else None


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _view_sql(name: str, columns: list[str], versions: dict[str, str]) -> str:
    """One table as readers see it: every published date's folder, the date as ``run_date``."""
    parts = []
    for day, folder in sorted(versions.items()):
        path = storage.local_path(folder)
        if path is None or not any(Path(path).glob("*.parquet")):
            raise NotReadable(f"{name}: no Parquet files in {folder}")
        date.fromisoformat(day)  # the date is pasted into SQL: it must be one
        parts.append(f"SELECT *, DATE '{day}' AS run_date FROM read_parquet({_quoted(str(Path(path) / '*.parquet'))}, "
                     f"union_by_name = true, hive_partitioning = false)")
    cols = ", ".join(f'"{c}"' for c in columns)
    return f"SELECT {cols} FROM ({' UNION ALL BY NAME '.join(parts)})"


def _connect(database: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET default_null_order = 'nulls_first_on_asc_last_on_desc'")  # Spark's
    con.execute("SET ieee_floating_point_ops = false")
    con.execute("SET error_on_division_by_zero = false")  # x / 0 is NULL, as in Spark
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f'CREATE SCHEMA "{database}"')
    return con


def _create_views(con: duckdb.DuckDBPyConnection, database: str, current: manifest.Manifest | None,
                  runs: str | None, named: set[str]) -> None:
    """A view per table ``named`` (lower case): the published ones from ``current``, ``runs`` from its folder."""
    if runs is not None and RUNS in named:
        con.execute(f'CREATE VIEW "{database}".{RUNS} AS SELECT * FROM read_parquet({_quoted(runs)}, '
                    f"union_by_name = true)")
    for table, spec in (current.tables.items() if current is not None else ()):
        if table.lower() in named:
            con.execute(f'CREATE VIEW "{database}"."{table}" AS '
                        f"{_view_sql(table, spec['columns'], spec['versions'])}")


def _python(value):
    """A DuckDB value as it is printed: a timestamp as naive local time (as pyspark's Row gives it). Spark writes
    instants (INT96, which DuckDB reads as naive UTC, or UTC-adjusted micros, which it reads with a zone)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone().replace(tzinfo=None)
    return value


def _run(con: duckdb.DuckDBPyConnection, sql: str, max_rows: int | None = None) -> Result:
    result = con.execute(sql)
    columns = [d[0] for d in result.description or []]
    rows = result.fetchall() if max_rows is None else result.fetchmany(max_rows)
    return columns, [tuple(_python(v) for v in r) for r in rows]


def _names(sql: str) -> set[str]:
    """Every word of ``sql`` in lower case: a view is made only for a table the query may name (each costs a
    look at its files)."""
    return set(re.findall(r"[a-z_][a-z0-9_]*", sql.lower()))


def query(cfg: Config, sql: str, max_rows: int | None = None) -> Result:
    """``sql`` (DuckDB SQL) over the published tables, ``<database>.<table>``, and the ``runs`` table; its first
    ``max_rows`` rows (default all). Raises
    :class:`NotReadable` (:class:`PublishUnderWay` included) when the files cannot answer now, ``duckdb.Error``
    when the SQL fails."""
    current = current_manifest(cfg)
    db = cfg.warehouse.database
    with _connect(db) as con:
        _create_views(con, db, current, _runs_glob(cfg), _names(sql))
        return _run(con, sql, max_rows)


def runs_sql(database: str, limit: int) -> str:
    """Every run's latest row (as ``reelrank runs`` shows it), newest first (Spark SQL reads it alike)."""
    return (f"SELECT run_id, run_date, status, seconds, stage_rows['score'] AS recommendations, "
            f"published_model, split_part(error, chr(10), 1) AS error FROM (SELECT *, row_number() OVER (PARTITION "
            f"BY run_id ORDER BY recorded_at DESC NULLS LAST, finished_at DESC NULLS LAST) AS _latest FROM "
            f"{database}.{RUNS}) WHERE _latest = 1 ORDER BY started_at DESC LIMIT {int(limit)}")


def runs(cfg: Config, limit: int) -> Result:
    """The ``limit`` latest runs (:func:`runs_sql`), read from the ``runs`` folder: no manifest needed, so it
    answers during a publish too."""
    folder = _runs_glob(cfg)
    if folder is None:
        raise NotReadable(f"no runs under {cfg.data_dir} yet: run reelrank nightly first")
    db = cfg.warehouse.database
    with _connect(db) as con:
        _create_views(con, db, None, folder, {RUNS})
        return _run(con, runs_sql(db, limit))


def where(cfg: Config, table: str, day: date | None) -> str:
    """The folder readers of ``table`` see for ``day`` (default the latest published date), from the current
    manifest; :class:`NotReadable` when there is none."""
    current = current_manifest(cfg, retry_hint=", retry in a moment")
    db = cfg.warehouse.database
    versions = current.tables.get(table, {}).get("versions")
    if versions is None:
        raise NotReadable(f"no table {db}.{table}")
    shown = day or max(date.fromisoformat(d) for d in current.published)  # a manifest is written by a publish
    found = versions.get(shown.isoformat())
    if found is None:
        raise NotReadable(f"{db}.{table} has no published partition for {shown}")
    return str(storage.local_path(found) or found)
