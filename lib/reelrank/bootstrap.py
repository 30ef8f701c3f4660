"""What every entry point shares: logging, arguments, config and SparkSession, and the jobs' bodies.

Used by the ``reelrank`` command (:mod:`reelrank.cli`), the spark-submit jobs (``jobs/*.py``), the SQL
server and the benches. Importing it is cheap: pyspark, torch and the pipeline are imported only when a job
runs, so every ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from reelrank.catalog import STAGE_NAMES
from reelrank.config import Config, ConfigError, SourceKind, load_config

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


def start_session(args: argparse.Namespace):
    """Load the config and build the SparkSession: ``(cfg, spark)``, or None after one clear line on stderr."""
    from reelrank.session import JavaMissingError, build_spark

    try:
        cfg = config_from_args(args)
        return cfg, build_spark(cfg)
    except (ConfigError, JavaMissingError) as e:
        print(f"reelrank: {e}", file=sys.stderr)
        return None


def run_in_session(args: argparse.Namespace, body, errors: tuple[type[BaseException], ...] = ()) -> int:
    """A command's life: logging, config and SparkSession (exit 2 when they fail), ``body(cfg, spark)``'s exit
    code (1, with one line on stderr, for one of ``errors``), and the session stopped in every case."""
    setup_logging(args.verbose)
    if (started := start_session(args)) is None:
        return 2
    cfg, spark = started
    try:
        return body(cfg, spark)
    except errors as e:
        print(f"reelrank: {e}", file=sys.stderr)
        return 1
    finally:
        spark.stop()


def run_pipeline(stage: str, args: argparse.Namespace) -> int:
    """``reelrank nightly`` (``stage == "nightly"``) or ``reelrank stage NAME``, from parsed run arguments."""
    from reelrank import pipeline

    def body(cfg: Config, spark) -> int:
        if stage == "nightly":
            ctx = pipeline.run_nightly(spark, cfg, run_date(args), resume=args.resume)
            print(pipeline.summary(ctx))
        else:
            pipeline.run_stage(spark, cfg, run_date(args), stage)
        return 0

    return run_in_session(args, body, (pipeline.RunFailed, ValueError))


def run_tune(args: argparse.Namespace) -> int:
    """``reelrank tune``: grid-search ALS hyper-parameters on {database}.interactions into {database}.tuning."""

    def body(cfg: Config, spark) -> int:
        from reelrank.tune import run_tuning

        chosen = run_tuning(spark, cfg)
        print(" ".join(f"{k}={v:g}" for k, v in chosen.items()))
        return 0

    return run_in_session(args, body, (ValueError,))


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
