"""The ``reelrank`` command and the shared argument handling of the spark-submit jobs."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date, datetime, timezone

from reelrank.config import Config, ConfigError, load_config

log = logging.getLogger("reelrank")

SOURCES = ["synthetic", "movielens-100k", "movielens-csv", "parquet", "csv"]


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-5s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "petastorm", "pyarrow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="environment TOML (extends base.toml beside it); default conf/local.toml")
    p.add_argument("--data-dir", help="where the warehouse, metastore, shards and models live")
    p.add_argument("-v", "--verbose", action="store_true")


def add_run_args(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--date", type=_date, default=None, help="run date YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--source", choices=SOURCES, help="input kind (default from config)")
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
    return load_config(args.config, overrides or None)


def run_date(args: argparse.Namespace) -> date:
    return args.date or datetime.now(timezone.utc).date()


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


def run_job(stage: str, argv: list[str] | None = None) -> int:
    """Entry of ``jobs/<stage>.py`` and ``reelrank nightly``: parse, configure, build the session, run."""
    from reelrank import pipeline

    p = argparse.ArgumentParser(prog=f"reelrank {stage}", description=f"Run the {stage} stage of the nightly pipeline.")
    add_run_args(p)
    args = p.parse_args(argv)

    def body(cfg: Config, spark) -> int:
        if stage == "nightly":
            ctx = pipeline.run_nightly(spark, cfg, run_date(args), resume=args.resume)
            print(pipeline.summary(ctx))
        else:
            pipeline.run_stage(spark, cfg, run_date(args), stage)
        return 0

    return run_in_session(args, body, (pipeline.RunFailed, ValueError))


def _query(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="reelrank query", description="Run SQL against the warehouse and print the result.")
    add_common(p)
    p.add_argument("--format", choices=["table", "csv"], default="table")
    p.add_argument("--limit", type=int, default=1000, help="most rows printed (table format)")
    p.add_argument("sql")
    args = p.parse_args(argv)

    def body(_cfg: Config, spark) -> int:
        try:
            df = spark.sql(args.sql)
            if args.format == "csv":
                pdf = df.toPandas()
                pdf.to_csv(sys.stdout, index=False)
            else:
                rows = df.limit(args.limit + 1).collect()
                print(format_table(df.columns, [tuple(r) for r in rows[: args.limit]]))
                if len(rows) > args.limit:
                    print(f"(first {args.limit} rows; use --limit or --format csv for more)")
            return 0
        except Exception as e:  # AnalysisException, ParseException: show Spark's message, not a traceback
            print(f"reelrank: query failed: {str(e).splitlines()[0]}", file=sys.stderr)
            return 1

    return run_in_session(args, body)


def format_table(columns: list[str], rows: list[tuple]) -> str:
    """A plain fixed-width table, as a terminal user expects."""
    cells = [[("NULL" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |", line]
    out += ["| " + " | ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths)) + " |" for r in cells]
    out.append(line)
    out.append(f"{len(rows)} row{'s' if len(rows) != 1 else ''}")
    return "\n".join(out)


def _numeric(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _runs(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="reelrank runs", description="List recent runs.")
    add_common(p)
    p.add_argument("--limit", type=int, default=10)
    args = p.parse_args(argv)
    db = config_from_args(args).warehouse.database
    sql = (f"SELECT run_id, run_date, status, round(seconds, 1) AS seconds, stage_rows['score'] AS recommendations, "
           f"substring_index(error, '\\n', 1) AS error FROM {db}.runs ORDER BY started_at DESC LIMIT {args.limit}")
    return _query(([f"--config={args.config}"] if args.config else []) + (["--data-dir", args.data_dir] if args.data_dir else []) + [sql])


def _where(argv: list[str]) -> int:
    """Print the directory a table's published partition points at (for reading the Parquet directly)."""
    from pyspark.sql import functions as F

    from reelrank.warehouse import partition_location

    p = argparse.ArgumentParser(prog="reelrank where", description="Print where a published partition's Parquet files are.")
    add_common(p)
    p.add_argument("table")
    p.add_argument("--date", type=_date, default=None, help="run date (default: the latest published)")
    args = p.parse_args(argv)

    def body(cfg: Config, spark) -> int:
        db = cfg.warehouse.database
        if not spark.catalog.tableExists(f"{db}.{args.table}"):
            print(f"reelrank: no table {db}.{args.table}", file=sys.stderr)
            return 1
        day = args.date or spark.table(f"{db}.{args.table}").agg(F.max("run_date")).first()[0]
        location = partition_location(spark, db, args.table, day) if day else None
        if location is None:
            print(f"reelrank: {db}.{args.table} has no published partition{f' for {day}' if day else ''}", file=sys.stderr)
            return 1
        print(location.removeprefix("file:"))
        return 0

    return run_in_session(args, body)


def _report(argv: list[str]) -> int:
    from reelrank.report import latest_report

    p = argparse.ArgumentParser(prog="reelrank report", description="Print the path of the latest run report.")
    add_common(p)
    args = p.parse_args(argv)
    path = latest_report(config_from_args(args).data_dir)
    if path is None:
        print("reelrank: no report yet: run the nightly first", file=sys.stderr)
        return 1
    print(path)
    return 0


def _spark_conf(argv: list[str]) -> int:
    """Print the session's settings as spark-submit options (driver settings must be given at submit time).

    Secrets (the metastore password) are left out: the job sets them from its config when it starts, so they
    never appear on a command line.
    """
    from reelrank.session import spark_settings, split_secrets

    p = argparse.ArgumentParser(prog="reelrank spark-conf", description="Print --conf options for spark-submit.")
    add_common(p)
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    print(f"--master {cfg.spark.master}")
    for key, value in split_secrets(spark_settings(cfg))[0].items():
        print(f"--conf {key}={value}")
    return 0


COMMANDS = {
    "nightly": "run every stage and publish",
    "query": "run SQL against the warehouse",
    "runs": "list recent runs",
    "stage": "run one stage (ingest, matrix, ...) of today's run",
    "serve-sql": "start/stop the SQL (JDBC/Thrift) server over the warehouse",
    "where": "print the directory of a table's published partition",
    "report": "print the path of the latest run's HTML report",
    "spark-conf": "print the config's Spark settings as spark-submit options",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: reelrank COMMAND [options]\n\ncommands:")
        for name, text in COMMANDS.items():
            print(f"  {name:8s} {text}")
        print("\n'reelrank COMMAND --help' for a command's options")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "nightly":
        return run_job("nightly", rest)
    if cmd == "query":
        return _query(rest)
    if cmd == "runs":
        return _runs(rest)
    if cmd == "report":
        return _report(rest)
    if cmd == "where":
        return _where(rest)
    if cmd == "serve-sql":
        from reelrank.sqlserver import main as serve_sql

        return serve_sql(rest)
    if cmd == "spark-conf":
        return _spark_conf(rest)
    if not rest:
        print("usage: reelrank stage NAME [options]", file=sys.stderr)
        return 2
    return run_job(rest[0], rest[1:])


if __name__ == "__main__":
    sys.exit(main())
