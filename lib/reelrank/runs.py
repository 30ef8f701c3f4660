"""The record of one run: per-stage seconds and row counts, logged as they happen and kept in ``runs``.

Every attempt writes a ``started`` row when it begins and a row with its outcome when it ends, so an attempt that
was killed still shows (as ``started``); a run's state is its latest row by ``recorded_at``.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from reelrank import __version__

log = logging.getLogger("reelrank")

RUNS_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType()),
        T.StructField("run_date", T.DateType()),
        T.StructField("status", T.StringType()),
        T.StructField("started_at", T.TimestampType()),
        T.StructField("finished_at", T.TimestampType()),
        T.StructField("seconds", T.DoubleType()),
        T.StructField("stage_seconds", T.MapType(T.StringType(), T.DoubleType())),
        T.StructField("stage_rows", T.MapType(T.StringType(), T.LongType())),
        T.StructField("config_hash", T.StringType()),
        T.StructField("code_version", T.StringType()),
        T.StructField("source", T.StringType()),
        T.StructField("error", T.StringType()),
        T.StructField("published_model", T.StringType()),
        T.StructField("published_why", T.StringType()),
        T.StructField("recorded_at", T.TimestampType()),
    ]
)


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


@dataclass
class StageTimer:
    """Counts for one stage; ``rows`` is set by the stage body."""

    name: str
    rows: int = 0
    detail: str = ""
    seconds: float = 0.0


STAGE_LINE_FORMAT = "%-11s %10s %-21s %7.1f s  %s"
"""A stage's log line: name, count, what it counts, seconds, detail (``ingest  3,000 accepted interactions ...``)."""


def stage_line(stage: str = r"\w+") -> re.Pattern:
    """A pattern finding the log line of ``stage`` (a regex; default any): groups ``stage``, ``count``, ``seconds``."""
    return re.compile(rf"INFO\s+(?P<stage>{stage})\s+(?P<count>[\d,]+) [a-z][a-z ]*?\s+(?P<seconds>[\d.]+) s")


_IMPORTED = time.monotonic()


def process_seconds() -> float:
    """Wall seconds since this process started (Linux's /proc; else since this module was imported): what the
    command really took, Spark's start-up included."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, after "(comm)"
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


@dataclass
class RunRecord:
    run_date: date
    config_hash: str
    source: str
    run_id: str = field(default_factory=lambda: f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}")
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    stages: list[StageTimer] = field(default_factory=list)
    status: str = "started"
    error: str | None = None
    finished: datetime | None = None
    elapsed_before: float = 0.0
    """Seconds spent by this run's earlier attempts (a resumed run continues their clock)."""
    attempt_started: datetime = field(default_factory=lambda: datetime.now(UTC))
    published_model: str | None = None
    """The list published (the ranker, or the candidate source that beat it) and why: set by publish."""
    published_why: str | None = None

    @contextmanager
    def stage(self, name: str, counts: str = "rows") -> Iterator[StageTimer]:
        """Time a stage and log one line with its row count (``counts`` names what it counts) and seconds."""
        timer = StageTimer(name)
        t0 = time.perf_counter()
        try:
            yield timer
        finally:
            timer.seconds = time.perf_counter() - t0
            self.stages.append(timer)
        log.info(STAGE_LINE_FORMAT, name, f"{timer.rows:,}", counts, timer.seconds, timer.detail)

    def finish(self, status: str, error: str | None = None) -> None:
        self.status, self.error, self.finished = status, error, datetime.now(UTC)

    @property
    def seconds(self) -> float:
        """Wall seconds of every attempt of this run, this one up to now or its end."""
        end = self.finished or datetime.now(UTC)
        return self.elapsed_before + (end - self.attempt_started).total_seconds()

    def save(self, spark: SparkSession, database: str) -> None:
        """Append this run's row (its state now) to ``database.runs``."""
        from reelrank.warehouse.publishing import append_rows

        row = (
            self.run_id, self.run_date, self.status, self.started, self.finished, self.seconds,
            {s.name: round(s.seconds, 3) for s in self.stages}, {s.name: int(s.rows) for s in self.stages},
            self.config_hash, code_version(), self.source, self.error, self.published_model, self.published_why,
            datetime.now(UTC),
        )
        append_rows(spark, database, "runs", spark.createDataFrame([row], RUNS_SCHEMA))
