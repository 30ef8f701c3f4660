"""What every entry point shares: logging, arguments, config and SparkSession, and the jobs' bodies.

Used by the ``reelrank`` command (:mod:`reelrank.cli.main`), the spark-submit jobs (``jobs/*.py``), the SQL
server and the benches. Importing it is cheap: pyspark, torch and the pipeline are imported only when a job
runs, so every ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import tempfile
import time
import typing
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime

from reelrank.catalog import STAGE_NAMES
from reelrank.config import Config, ConfigError, SourceKind, load_config
from reelrank.errors import CorruptFile, error_type, memory_advice, out_of_memory, summary
from reelrank.warehouse import runlock, storage

log = logging.getLogger("reelrank")

SOURCE_KINDS: tuple[str, ...] = typing.get_args(SourceKind)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-5s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",  # a scheduler's log spans days
        stream=sys.stderr,
    )
    for noisy in ("py4j", "petastorm", "pyarrow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def parse_date(text: str) -> date:
    """argparse ``type`` of a ``YYYY-MM-DD`` date."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="environment TOML (extends base.toml beside it); default conf/local.toml")
    p.add_argument("--data-dir", help="where the warehouse, metastore, shards and models live "
                                      "(default: $REELRANK_DATA_DIR, else the config's warehouse.data_dir)")
    p.add_argument("-v", "--verbose", action="store_true")


def add_run_args(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--date", type=parse_date, default=None, help="run date YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--source", choices=SOURCE_KINDS, help="input kind (default from config)")
    p.add_argument("--input", help="MovieLens folder, or the Parquet/CSV file(s) or folder")
    p.add_argument("--resume", action="store_true",
                   help="continue the date's unpublished run, skipping stages whose outputs are complete")


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config named by ``--config`` and apply the command-line overrides."""
    overrides: dict = {}
    if getattr(args, "data_dir", None):
        overrides.setdefault("warehouse", {})["data_dir"] = args.data_dir
    if getattr(args, "source", None):
        overrides.setdefault("source", {})["kind"] = args.source
    if getattr(args, "input", None):
        overrides.setdefault("source", {})["input"] = args.input
    return load_config(getattr(args, "config", None), overrides or None)


def run_date(args: argparse.Namespace) -> date:
    return getattr(args, "date", None) or datetime.now(UTC).date()


class DataDirError(RuntimeError):
    """The data directory cannot be used: not creatable or writable, or held by another process."""


def check_data_dir(data_dir: str) -> None:
    """Fail with one line, before Spark starts, when the local directory a run writes (the data dir itself, or
    for a remote one its local state dir) cannot be created or written; remote filesystems say so themselves."""
    local = storage.local_state_dir(data_dir)
    what = "data directory" if storage.local_path(data_dir) is not None else f"the local state directory of {data_dir}:"
    try:
        if local.exists() and not local.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(local))
        local.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=local):
            pass
    except OSError as e:
        where = f" ({e.filename})" if e.filename and os.fspath(e.filename) != str(local) else ""
        raise DataDirError(f"cannot use {what} {local}: {e.strerror or e}{where}") from None


def _jvm_in_this_process() -> bool:
    """Whether this process already runs a Spark JVM (getOrCreate reuses it, and the metastore it booted)."""
    pyspark = sys.modules.get("pyspark")
    return pyspark is not None and getattr(pyspark.SparkContext, "_gateway", None) is not None


ORPHAN_WAIT_S = 60.0
"""How long a command waits for the JVM of a killed run, which still holds the embedded metastore, to exit."""


def claim_data_dir(cfg: Config, held: ExitStack, exclusive: bool, day: date | None = None) -> None:
    """Hold the data dir's run lock (:mod:`reelrank.warehouse.runlock`) until ``held`` closes: always for ``exclusive``
    commands (a night, a stage), and for any Spark command on an embedded Derby metastore, which admits one
    process. Raises :class:`DataDirError` naming the holder when another process has it."""
    derby = cfg.warehouse.metastore == "derby"
    if not (exclusive or derby):
        return
    local = storage.local_state_dir(cfg.data_dir)
    metastore_busy = (f"the embedded metastore under {local} is in use by {{}}; wait for it to finish, or use an "
                      "external metastore (conf/postgres.toml) "
                      + ("to run beside it" if exclusive else "to query while a night runs"))
    try:
        held.enter_context(runlock.hold(cfg.data_dir, day))
    except runlock.DataDirBusy as e:
        if exclusive:
            raise DataDirError(f"{e}; wait for it to finish or use another --data-dir") from None
        raise DataDirError(metastore_busy.format(e.holder.describe())) from None
    if derby and not _jvm_in_this_process():  # a process without the lock (the SQL server) may have booted it
        waited = 0.0
        while (other := runlock.derby_holder(local / runlock.METASTORE_DIR)) is not None:
            # a killed night's JVM outlives its Python by a few seconds: wait for it rather than fail a retry
            if not (other.pid and runlock.is_orphan(other.pid)) or waited >= ORPHAN_WAIT_S:
                raise DataDirError(metastore_busy.format(other.describe()))
            if waited == 0.0:
                log.info("waiting up to %.0f s for the exiting JVM of an earlier command (pid %s, its Python gone) "
                         "to release the metastore", ORPHAN_WAIT_S, other.pid)
            time.sleep(0.5)
            waited += 0.5


def start_session(args: argparse.Namespace, held: ExitStack, exclusive: bool = False):
    """Load the config, check and claim the data dir (until ``held`` closes) and build the SparkSession:
    ``(cfg, spark)``, or None after one clear line on stderr."""
    try:
        cfg = config_from_args(args)
        check_data_dir(cfg.data_dir)
        claim_data_dir(cfg, held, exclusive, run_date(args) if exclusive else None)
        from reelrank.session import JavaMissingError, build_spark
    except (ConfigError, DataDirError) as e:
        print(f"reelrank: {e}", file=sys.stderr)
        return None
    try:
        return cfg, build_spark(cfg)
    except JavaMissingError as e:
        print(f"reelrank: {e}", file=sys.stderr)
        return None


def one_line(e: BaseException, cfg: Config, what: str | None = None) -> str:
    """``e`` as the one line a user reads: its root cause (not a Java trace), the setting to raise when it ran out
    of memory, and, for an unexpected error (``what`` names the failed stage or command), where the trace is."""
    text = summary(e)
    if what is not None:
        kind = error_type(e)
        text = f"{what} failed: {text if text.startswith(kind + ':') else f'{kind}: {text}'}"
    if out_of_memory(e):
        text += f"; out of memory: {memory_advice(cfg.spark)}"
    if what is not None:
        text += "; the full trace is in the log with -v / --verbose"
    return text


Expected = tuple[type[BaseException], ...]


def run_in_session(args: argparse.Namespace, body, errors: Expected | Callable[[], Expected] = (),
                   what: str | None = None, exclusive: bool = False) -> int:
    """A command's life: logging, config, data dir and SparkSession (exit 2 when they fail), ``body(cfg, spark)``'s
    exit code, and the session stopped in every case. One of ``errors`` (or a function returning them, called
    only on failure so that a heavy module need not be imported first) or a corrupt file exits 1 with its one
    line on stderr; any other exception exits 1 with one line naming ``what`` failed (default: the command),
    its trace going to the debug log. ``exclusive`` holds the data dir against every other reelrank process."""
    setup_logging(args.verbose)
    what = what or getattr(args, "command", None) or "reelrank"
    with ExitStack() as held:
        if (started := start_session(args, held, exclusive)) is None:
            return 2
        cfg, spark = started
        try:
            return body(cfg, spark)
        except Exception as e:
            log.debug("%s failed", what, exc_info=True)
            known = isinstance(e, (*(errors() if callable(errors) else errors), CorruptFile))
            print(f"reelrank: {one_line(e, cfg, None if known else what)}", file=sys.stderr)
            return 1
        finally:
            spark.stop()


def run_pipeline(stage: str, args: argparse.Namespace) -> int:
    """``reelrank nightly`` (``stage == "nightly"``) or ``reelrank stage NAME``, from parsed run arguments.

    The pipeline (Spark, torch) is imported once the data dir is claimed, so a second run stops at once."""

    def body(cfg: Config, spark) -> int:
        from reelrank import pipeline
        from reelrank.summary import summary

        if stage == "nightly":
            ctx = pipeline.run_nightly(spark, cfg, run_date(args), resume=args.resume)
            print(summary(ctx))
        else:
            pipeline.run_stage(spark, cfg, run_date(args), stage)
        return 0

    def expected() -> Expected:
        from reelrank import pipeline

        return pipeline.RunFailed, ValueError

    return run_in_session(args, body, expected, what=stage, exclusive=True)


def run_tune(args: argparse.Namespace) -> int:
    """``reelrank tune``: grid-search ALS hyper-parameters on {database}.interactions into {database}.tuning."""

    def body(cfg: Config, spark) -> int:
        from reelrank.tune import run_tuning

        chosen = run_tuning(spark, cfg)
        print(" ".join(f"{k}={v:g}" for k, v in chosen.items()))
        return 0

    return run_in_session(args, body, (ValueError,), what="tune")


@dataclass(frozen=True)
class Job:
    """A command shared by ``reelrank`` and ``jobs/*.py``: its help, its arguments and what it runs."""

    help: str
    description: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _stage_job(stage: str) -> Job:
    return Job(f"run the {stage} stage", f"Run the {stage} stage of the nightly pipeline.", add_run_args,
               lambda args: run_pipeline(stage, args))


JOBS: dict[str, Job] = {
    "nightly": Job("run every stage and publish", "Run every stage of the nightly pipeline and publish.",
                   add_run_args, lambda args: run_pipeline("nightly", args)),
    **{stage: _stage_job(stage) for stage in STAGE_NAMES},
    "tune": Job("grid-search ALS hyper-parameters", "Tune ALS rank / regParam / alpha on a holdout "
                "(evaluate.tune_metric); the grid is [als] tune_*, results go to {database}.tuning.",
                add_common, run_tune),
}
"""``jobs/NAME.py`` runs ``JOBS[NAME]``; ``reelrank nightly``, ``reelrank stage NAME`` and ``reelrank tune`` too."""


def run_job(name: str, argv: list[str] | None = None) -> int:
    """Entry of ``jobs/<name>.py``: parse ``argv`` (default ``sys.argv[1:]``), configure, build the session, run."""
    job = JOBS[name]
    prog = f"reelrank stage {name}" if name in STAGE_NAMES else f"reelrank {name}"
    p = argparse.ArgumentParser(prog=prog, description=job.description)
    job.add_args(p)
    return job.run(p.parse_args(argv))
