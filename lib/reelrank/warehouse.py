"""Writing to the warehouse: versioned partition directories swapped in by one metastore operation.

Each run writes a table's output for its ``run_date`` to a fresh directory
``<table>/run_date=<date>/<run_id>/`` and, only when the whole run has succeeded, points the
partition at it (``ALTER TABLE ... PARTITION ... SET LOCATION``). Readers never see a half-written
night, a failed run leaves every published partition as it was, and a rerun of a date replaces it.
Replaced directories are kept for ``grace_hours`` so that queries already running keep their files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank import storage
from reelrank.config import Config

log = logging.getLogger(__name__)


def table_root(spark: SparkSession, database: str, table: str) -> str:
    """Where a table's partition directories live: under the database's location."""
    row = spark.sql(f"DESCRIBE DATABASE {database}").filter("info_name = 'Location'").first()
    assert row is not None  # DESCRIBE DATABASE always has a Location row
    loc = row["info_value"]
    return f"{loc.rstrip('/')}/{table}"


def _ddl_columns(df: DataFrame) -> str:
    return ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in df.schema.fields)


def _add_missing_columns(spark: SparkSession, name: str, df: DataFrame) -> None:
    """Add to existing table ``name`` the columns of ``df`` it lacks (a newer reelrank writes them); the
    metastore keeps names in lower case, so the comparison ignores case."""
    have = {c.lower() for c in spark.table(name).columns}
    added = [c for c in df.columns if c.lower() not in have]
    if added:
        log.info("adding column(s) %s to %s", ", ".join(added), name)
        spark.sql(f"ALTER TABLE {name} ADD COLUMNS ({_ddl_columns(df.select(*added))})")


def ensure_partitioned_table(spark: SparkSession, database: str, table: str, df: DataFrame) -> None:
    """Create ``database.table`` (Parquet, partitioned by run_date DATE) with ``df``'s columns if it is missing;
    add the columns an existing table lacks (a newer reelrank wrote them), so SQL sees them too."""
    name = f"{database}.{table}"
    if spark.catalog.tableExists(name):
        _add_missing_columns(spark, name, df)
        return
    root = table_root(spark, database, table)
    spark.sql(
        f"CREATE TABLE {database}.{table} ({_ddl_columns(df)}, {C.RUN_DATE} DATE) "
        f"USING parquet PARTITIONED BY ({C.RUN_DATE}) LOCATION '{root}'"
    )


def partition_location(spark: SparkSession, database: str, table: str, run_date: date) -> str | None:
    """The directory the published partition points at, or None when the date is not published."""
    if not spark.catalog.tableExists(f"{database}.{table}"):
        return None
    parts = {r[0] for r in spark.sql(f"SHOW PARTITIONS {database}.{table}").collect()}
    if f"{C.RUN_DATE}={run_date.isoformat()}" not in parts:
        return None
    rows = spark.sql(
        f"DESCRIBE FORMATTED {database}.{table} PARTITION ({C.RUN_DATE}='{run_date.isoformat()}')"
    ).filter("col_name = 'Location'").collect()
    return rows[0]["data_type"]


def swap_partition(spark: SparkSession, database: str, table: str, run_date: date, location: str) -> str | None:
    """Point the run_date partition at ``location`` in one metastore call; return the previous location."""
    previous = partition_location(spark, database, table, run_date)
    spec = f"PARTITION ({C.RUN_DATE}='{run_date.isoformat()}')"
    if previous is None:
        spark.sql(f"ALTER TABLE {database}.{table} ADD {spec} LOCATION '{location}'")
    else:
        spark.sql(f"ALTER TABLE {database}.{table} {spec} SET LOCATION '{location}'")
    spark.sql(f"REFRESH TABLE {database}.{table}")
    return previous


def collect_garbage(spark: SparkSession, database: str, table: str, grace_hours: float) -> list[str]:
    """Delete version directories no partition points at and untouched for ``grace_hours``; return their locations.

    Only dates that have a directory past the grace period cost a metastore lookup.
    """
    root = storage.resolve(table_root(spark, database, table))
    cutoff = time.time() - grace_hours * 3600
    removed = []
    for date_name in storage.listdir(root, dirs_only=True):
        if not date_name.startswith(f"{C.RUN_DATE}="):
            continue
        date_dir = storage.join(root, date_name)
        versions = [storage.join(date_dir, v) for v in storage.listdir(date_dir, dirs_only=True)]
        expired = [v for v in versions if storage.mtime(v) < cutoff]
        if not expired:
            continue
        live = partition_location(spark, database, table, date.fromisoformat(date_name.split("=", 1)[1]))
        live_at = storage.resolve(live) if live else None
        if live_at is not None and not live_at.startswith(root + "/"):
            raise ValueError(
                f"{database}.{table}: partition {date_name} points at {live}, outside the table root {root}"
            )
        for version in expired:
            if version != live_at:
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
        """Swap each table's run_date partition to this run's directory; return table -> location."""
        published = {}
        for table in tables:
            location, df = self.staged.get(table, (self.location(table), None))
            ensure_partitioned_table(
                self.spark, self.database, table, df if df is not None else self.spark.read.parquet(location)
            )
            swap_partition(self.spark, self.database, table, self.run_date, location)
            published[table] = location
        for table in tables:
            try:
                removed = collect_garbage(self.spark, self.database, table, self.cfg.warehouse.grace_hours)
            except Exception as e:  # published already: old versions stay until a later night removes them
                log.warning("could not remove replaced versions of %s.%s: %s", self.database, table, e)
                continue
            if removed:
                log.info("removed %d replaced version(s) of %s.%s", len(removed), self.database, table)
        return published


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
    """The whole table, or None when it does not exist yet."""
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
