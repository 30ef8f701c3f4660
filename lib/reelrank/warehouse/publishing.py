"""Publishing to the warehouse: every table of a night becomes visible at once, by flipping one pointer.

A run writes each table's output for its ``run_date`` to a fresh directory ``<table>/run_date=<date>/<run_id>/``,
registered as partition ``run_id=<id>`` of the physical table ``<table>_versions``. Readers query the view
``<table>``: the versions joined with ``published_runs``, which holds one row per run date, the run shown for it.
Publishing registers every table's version (invisible: no reader's join reaches it), then points the date's
``published_runs`` partition at a one-row file naming this run, in one metastore call. Readers see either all of
last night's tables or all of tonight's; a run that dies before the flip leaves every night as it was, and a rerun
of a date replaces it. Replaced versions are kept for ``grace_hours`` so that queries already running keep their
files, then collected.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank import faults
from reelrank.config import Config
from reelrank.warehouse import manifest, storage

log = logging.getLogger(__name__)

POINTER = "published_runs"
"""The table that decides what readers see: ``run_id``, ``published_at``, partitioned by ``run_date``."""
VERSION = "run_id"
"""Partition column of the ``<table>_versions`` tables: the run that wrote the version."""
VERSIONS_SUFFIX = "_versions"


def versions_table(table: str) -> str:
    """The physical table behind the view ``table``: every registered version, partitioned by run id."""
    return f"{table}{VERSIONS_SUFFIX}"


def database_location(spark: SparkSession, database: str) -> str:
    """The database's folder (tables' version directories and the manifest live under it)."""
    row = spark.sql(f"DESCRIBE DATABASE {database}").filter("info_name = 'Location'").first()
    assert row is not None  # DESCRIBE DATABASE always has a Location row
    return row["info_value"].rstrip("/")


def table_root(spark: SparkSession, database: str, table: str) -> str:
    """Where a table's version directories live: under the database's location."""
    return f"{database_location(spark, database)}/{table}"


def _ddl_columns(df: DataFrame) -> str:
    return ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in df.schema.fields)


def _is_view(spark: SparkSession, name: str) -> bool:
    return spark.catalog.getTable(name).tableType == "VIEW"


def _add_missing_columns(spark: SparkSession, name: str, df: DataFrame) -> bool:
    """Add to existing table ``name`` the columns of ``df`` it lacks (a newer reelrank writes them); the
    metastore keeps names in lower case, so the comparison ignores case. Whether any were added."""
    have = {c.lower() for c in spark.table(name).columns}
    added = [c for c in df.columns if c.lower() not in have]
    if added:
        log.info("adding column(s) %s to %s", ", ".join(added), name)
        spark.sql(f"ALTER TABLE {name} ADD COLUMNS ({_ddl_columns(df.select(*added))})")
    return bool(added)


def ensure_pointer(spark: SparkSession, database: str) -> None:
    """Create ``published_runs`` if it is missing."""
    if not spark.catalog.tableExists(f"{database}.{POINTER}"):
        spark.sql(f"CREATE TABLE {database}.{POINTER} ({VERSION} STRING, published_at TIMESTAMP, {C.RUN_DATE} DATE) "
                  f"USING parquet PARTITIONED BY ({C.RUN_DATE}) LOCATION '{table_root(spark, database, POINTER)}'")


def published_runs(spark: SparkSession, database: str) -> dict[date, str]:
    """Run date -> the run readers see for it."""
    if not spark.catalog.tableExists(f"{database}.{POINTER}"):
        return {}
    return {r[C.RUN_DATE]: r[VERSION] for r in spark.table(f"{database}.{POINTER}").collect()}


def published_run(spark: SparkSession, database: str, run_date: date) -> str | None:
    """The run readers see for ``run_date``, or None when the date is not published."""
    if not spark.catalog.tableExists(f"{database}.{POINTER}"):
        return None
    row = spark.table(f"{database}.{POINTER}").filter(F.col(C.RUN_DATE) == F.lit(run_date)).first()
    return None if row is None else row[VERSION]


def _partition_dir(spark: SparkSession, name: str, spec: str) -> str | None:
    """Location of partition ``spec`` (``col='v'``) of table ``name``, or None when it is not registered."""
    if spec.replace("'", "") not in {r[0] for r in spark.sql(f"SHOW PARTITIONS {name}").collect()}:
        return None
    rows = spark.sql(f"DESCRIBE FORMATTED {name} PARTITION ({spec})").filter("col_name = 'Location'").collect()
    return rows[0]["data_type"]


def partition_location(spark: SparkSession, database: str, table: str, run_date: date) -> str | None:
    """The directory readers of ``table`` see for ``run_date``, or None when the date is not published."""
    run_id = published_run(spark, database, run_date)
    versions = f"{database}.{versions_table(table)}"
    if run_id is None or not spark.catalog.tableExists(versions):
        return None
    return _partition_dir(spark, versions, f"{VERSION}='{run_id}'")


def register_version(spark: SparkSession, database: str, table: str, run_id: str, location: str,
                     df: DataFrame) -> bool:
    """Make ``location`` (holding ``df``) partition ``run_id`` of ``<table>_versions``, creating the table or
    adding the columns it lacks (a newer reelrank wrote them), and keep the readers' view ``table`` in step.
    Whether the table's shape changed (created, or columns added)."""
    _migrate_legacy(spark, database, table)
    if VERSION in (c.lower() for c in df.columns):
        raise ValueError(f"{database}.{table}: a data column may not be called {VERSION} (the version column)")
    versions = f"{database}.{versions_table(table)}"
    if not spark.catalog.tableExists(versions):
        spark.sql(f"CREATE TABLE {versions} ({_ddl_columns(df)}, {VERSION} STRING) USING parquet "
                  f"PARTITIONED BY ({VERSION}) LOCATION '{table_root(spark, database, table)}'")
        changed = True
    else:
        changed = _add_missing_columns(spark, versions, df)
    spark.sql(f"ALTER TABLE {versions} ADD IF NOT EXISTS PARTITION ({VERSION}='{run_id}') LOCATION '{location}'")
    if changed or not spark.catalog.tableExists(f"{database}.{table}"):
        ensure_view(spark, database, table)
    return changed


def ensure_view(spark: SparkSession, database: str, table: str) -> None:
    """(Re)create the readers' view ``table``: the published version of every date, with its ``run_date``.

    The broadcast hint lets Spark prune the versions to the published ones (dynamic partition pruning), so a
    query of one date reads that date's files only.
    """
    ensure_pointer(spark, database)
    versions = f"{database}.{versions_table(table)}"
    cols = ", ".join(f"v.`{c}`" for c in spark.table(versions).columns if c != VERSION)
    spark.sql(f"CREATE OR REPLACE VIEW {database}.{table} AS SELECT /*+ BROADCAST(p) */ {cols}, p.{C.RUN_DATE} "
              f"FROM {versions} v JOIN {database}.{POINTER} p ON v.{VERSION} = p.{VERSION}")


def flip(spark: SparkSession, database: str, run_date: date, run_id: str) -> str | None:
    """Show ``run_id`` for ``run_date`` in every table at once: one metastore call on ``published_runs``.

    Returns the run shown before (None for a new date).
    """
    ensure_pointer(spark, database)
    previous = published_run(spark, database, run_date)
    location = f"{table_root(spark, database, POINTER)}/{C.RUN_DATE}={run_date.isoformat()}/{run_id}"
    row = spark.createDataFrame([(run_id, datetime.now(UTC))], f"{VERSION} STRING, published_at TIMESTAMP")
    row.coalesce(1).write.mode("overwrite").parquet(location)
    spec = f"PARTITION ({C.RUN_DATE}='{run_date.isoformat()}')"
    if previous is None:
        spark.sql(f"ALTER TABLE {database}.{POINTER} ADD IF NOT EXISTS {spec} LOCATION '{location}'")
    else:
        spark.sql(f"ALTER TABLE {database}.{POINTER} {spec} SET LOCATION '{location}'")
    spark.sql(f"REFRESH TABLE {database}.{POINTER}")
    return previous


def _migrate_legacy(spark: SparkSession, database: str, table: str) -> None:
    """A warehouse written before the pointer (issue 13) has ``table`` as a table partitioned by ``run_date``
    whose partitions point at version directories: register those as versions, point each date at its version
    (unless already published), and replace the table by the view. The data stay where they are."""
    name = f"{database}.{table}"
    if not spark.catalog.tableExists(name) or _is_view(spark, name):
        return
    kind = spark.catalog.getTable(name).tableType
    if kind != "EXTERNAL":
        raise ValueError(f"{name} is a {kind} table, not one reelrank published: move it away to publish {table}")
    ensure_pointer(spark, database)
    versions = f"{database}.{versions_table(table)}"
    if not spark.catalog.tableExists(versions):
        spark.sql(f"CREATE TABLE {versions} ({_ddl_columns(spark.table(name).drop(C.RUN_DATE))}, {VERSION} STRING) "
                  f"USING parquet PARTITIONED BY ({VERSION}) LOCATION '{table_root(spark, database, table)}'")
    shown = published_runs(spark, database)
    for (part,) in spark.sql(f"SHOW PARTITIONS {name}").collect():
        day = date.fromisoformat(part.split("=", 1)[1])
        location = _partition_dir(spark, name, f"{C.RUN_DATE}='{day.isoformat()}'")
        assert location is not None  # listed by SHOW PARTITIONS just now
        run_id = location.rstrip("/").rsplit("/", 1)[1]
        spark.sql(f"ALTER TABLE {versions} ADD IF NOT EXISTS PARTITION ({VERSION}='{run_id}') LOCATION '{location}'")
        if day not in shown:
            flip(spark, database, day, run_id)
            shown[day] = run_id
    spark.sql(f"DROP TABLE {name}")  # external: the metadata only
    ensure_view(spark, database, table)
    log.info("moved %s to the published-run pointer (%s)", name, versions)


def collect_garbage(spark: SparkSession, database: str, table: str, grace_hours: float) -> list[str]:
    """Delete the version directories of ``table`` (or of the pointer) that no date shows and that were untouched
    for ``grace_hours``, unregistering them; return their locations. An unpublished attempt's staged output goes
    too once it is that old (a resume after that recomputes it)."""
    root = storage.resolve(table_root(spark, database, table))
    cutoff = time.time() - grace_hours * 3600
    live = set(published_runs(spark, database).values())
    versions = f"{database}.{versions_table(table)}"
    registered = table != POINTER and spark.catalog.tableExists(versions)
    removed = []
    for date_name in storage.listdir(root, dirs_only=True):
        if not date_name.startswith(f"{C.RUN_DATE}="):
            continue
        date_dir = storage.join(root, date_name)
        for run_id in storage.listdir(date_dir, dirs_only=True):
            version = storage.join(date_dir, run_id)
            if run_id in live or storage.mtime(version) >= cutoff:
                continue
            if registered:
                spark.sql(f"ALTER TABLE {versions} DROP IF EXISTS PARTITION ({VERSION}='{run_id}')")
            storage.remove(version)
            removed.append(version)
    return removed


@dataclass
class RunOutputs:
    """The tables one run writes: staged as it goes, published together at the end."""

    spark: SparkSession
    cfg: Config
    run_date: date
    run_id: str
    staged: dict[str, tuple[str, DataFrame]] = field(default_factory=dict)
    """Tables written by this process (a resumed run reads the others back from their directories)."""

    @property
    def database(self) -> str:
        return self.cfg.warehouse.database

    def location(self, table: str) -> str:
        """This run's directory for ``table``."""
        root = table_root(self.spark, self.database, table)
        return f"{root}/{C.RUN_DATE}={self.run_date.isoformat()}/{self.run_id}"

    def stage(self, table: str, df: DataFrame) -> DataFrame:
        """Write ``df`` to this run's fresh directory for ``table`` and return it read back (lineage cut)."""
        location = self.location(table)
        df.drop(C.RUN_DATE).write.mode("overwrite").parquet(location)
        written = self.spark.read.parquet(location)
        self.staged[table] = (location, written)
        return written

    def publish(self, tables: list[str]) -> dict[str, str]:
        """Register every table's version, then flip the pointer: all tables turn to this run at once.

        Returns table -> location. Replaced versions past the grace period are collected afterwards, and the
        manifest (:mod:`reelrank.warehouse.manifest`) is rewritten last.
        """
        published = {}
        ensure_pointer(self.spark, self.database)
        for table in tables:
            location, df = self.staged.get(table, (self.location(table), None))
            if register_version(self.spark, self.database, table, self.run_id, location,
                                df if df is not None else self.spark.read.parquet(location)):
                # a view's columns changed before the flip: the manifest no longer says what readers see
                manifest.remove(storage.resolve(database_location(self.spark, self.database)))
            published[table] = location
            faults.hit("publish.registered")
        base = current_manifest(self.spark, self.database)  # after a legacy warehouse's dates were moved over
        faults.hit("publish.flip")
        previous = flip(self.spark, self.database, self.run_date, self.run_id)
        log.info("published run %s for %s in %d tables%s", self.run_id, self.run_date, len(published),
                 f" (replacing run {previous})" if previous else "")
        for table in (*tables, POINTER):
            try:
                removed = collect_garbage(self.spark, self.database, table, self.cfg.warehouse.grace_hours)
            except Exception as e:  # published already: old versions stay until a later night removes them
                log.warning("could not remove replaced versions of %s.%s: %s", self.database, table, e)
                continue
            if removed:
                log.info("removed %d replaced version(s) of %s.%s", len(removed), self.database, table)
        try:
            self._write_manifest(base, published)
        except Exception as e:  # published already: readers find no current manifest and ask Spark
            log.warning("could not write the published manifest of %s: %s", self.database, e)
        return published

    def _write_manifest(self, base: manifest.Manifest, published: dict[str, str]) -> None:
        db_location = database_location(self.spark, self.database)
        folders = {**published, POINTER: f"{db_location}/{POINTER}/{C.RUN_DATE}={self.run_date}/{self.run_id}"}
        columns = {t: _view_columns(self.spark, self.database, t) for t in folders}
        manifest.write(storage.resolve(db_location), manifest.updated(
            base, self.run_date, self.run_id, folders, columns,
            manifest.pointer_dirs(storage.resolve(db_location), POINTER)))


def _view_columns(spark: SparkSession, database: str, table: str) -> list[str]:
    """The columns readers of ``table`` see, in order (``run_date`` last, as the view adds it)."""
    if table == POINTER:  # a plain table: run_id is its data
        return [c for c in spark.table(f"{database}.{POINTER}").columns if c != C.RUN_DATE] + [C.RUN_DATE]
    return [c for c in spark.table(f"{database}.{versions_table(table)}").columns if c != VERSION] + [C.RUN_DATE]


def current_manifest(spark: SparkSession, database: str) -> manifest.Manifest:
    """The manifest as it stands, or (missing, stale, another format) rebuilt from the metastore."""
    db_location = database_location(spark, database)
    found = manifest.read(storage.resolve(db_location), POINTER)
    if found is not None:
        return found
    shown = published_runs(spark, database)
    tables: dict[str, dict] = {}
    names = [t.name for t in spark.catalog.listTables(database)
             if t.name.endswith(VERSIONS_SUFFIX) and not t.isTemporary]
    for name in (POINTER, *(n.removesuffix(VERSIONS_SUFFIX) for n in names)):
        versions = {}
        for day, run_id in shown.items():
            spec = f"{C.RUN_DATE}='{day.isoformat()}'" if name == POINTER else f"{VERSION}='{run_id}'"
            folder = _partition_dir(spark, f"{database}.{name if name == POINTER else versions_table(name)}", spec)
            if folder is not None:
                versions[day.isoformat()] = folder
        if versions:
            tables[name] = {"columns": _view_columns(spark, database, name), "versions": versions}
    if shown:  # a warehouse from before the manifest, or one whose last publish died before writing it
        log.info("rebuilt the published manifest of %s from the metastore (%d tables)", database, len(tables))
    return manifest.Manifest(database, {d.isoformat(): r for d, r in shown.items()}, tables,
                             manifest.pointer_dirs(storage.resolve(db_location), POINTER))


def append_rows(spark: SparkSession, database: str, table: str, df: DataFrame) -> None:
    """Append to an unpartitioned history table (runs), creating it on first use; columns the table lacks (a
    newer reelrank added them) are added first."""
    name = f"{database}.{table}"
    if spark.catalog.tableExists(name):
        _add_missing_columns(spark, name, df)
        df.select(*spark.table(name).columns).write.insertInto(name)
    else:
        df.write.format("parquet").saveAsTable(name)


def read_table(spark: SparkSession, database: str, table: str) -> DataFrame | None:
    """The whole table (the published nights of a view), or None when it does not exist yet."""
    name = f"{database}.{table}"
    return spark.table(name) if spark.catalog.tableExists(name) else None


def latest_partition(spark: SparkSession, database: str, table: str) -> DataFrame | None:
    """Rows of the most recent published run_date, without the run_date column."""
    df = read_table(spark, database, table)
    if df is None:
        return None
    agg_row = df.agg(F.max(C.RUN_DATE)).first()
    assert agg_row is not None  # a global aggregate returns exactly one row
    last = agg_row[0]
    return None if last is None else df.filter(F.col(C.RUN_DATE) == F.lit(last)).drop(C.RUN_DATE)
