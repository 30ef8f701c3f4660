"""The ``reelrank`` command: one argparse parser, one sub-command per task.

The shared helpers (logging, arguments, config, SparkSession, the jobs) live in :mod:`reelrank.cli.bootstrap`;
this module only dispatches, plus the bodies of the commands only a person runs (query, runs, where, report,
spark-conf). Nothing heavy is imported until a command runs, so ``--help`` never starts Spark.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any

from reelrank import __version__
from reelrank.catalog import STAGE_NAMES
from reelrank.cli.bootstrap import (
    JOBS,
    add_common,
    add_run_args,
    config_from_args,
    one_line,
    parse_date,
    run_in_session,
    run_pipeline,
    setup_logging,
)
from reelrank.config import Config, ConfigError
from reelrank.errors import unreadable_parquet
from reelrank.warehouse import sqlserver

log = logging.getLogger(__name__)


def _query(args: argparse.Namespace) -> int:
    """DuckDB SQL over the published files (:mod:`reelrank.warehouse.fastread`); with ``--spark``, Spark SQL."""
    if args.spark:
        return _spark_query(args)
    first = None if args.format == "csv" else args.limit + 1  # a table prints at most --limit rows
    return _read_files(args, lambda fastread, cfg: _print_result(args, *fastread.query(cfg, args.sql, first)))


def _spark_query(args: argparse.Namespace) -> int:
    def body(cfg: Config, spark) -> int:
        if not args.verbose:  # a failed task's Java trace would bury the one line below; -v shows it
            spark.sparkContext.setLogLevel("OFF")
        try:
            df = spark.sql(args.sql)
            rows = df.collect() if args.format == "csv" else df.limit(args.limit + 1).collect()
            _print_result(args, df.columns, [tuple(r) for r in rows])
            return 0
        except Exception as e:  # AnalysisException, ParseException, a corrupt file: one line, the trace in the log
            log.debug("query failed", exc_info=True)
            unreadable = unreadable_parquet(e)
            print(f"reelrank: query failed: {unreadable or one_line(e, cfg)}", file=sys.stderr)
            return 1

    return run_in_session(args, body)


def _read_files(args: argparse.Namespace, answer: Callable[[Any, Config], object]) -> int:
    """A command DuckDB answers from the warehouse's files, ``answer(fastread, cfg)``: exit 0, or one line on
    stderr (2 for a bad config, 1 when the files cannot answer now or the SQL fails; the trace with -v)."""
    setup_logging(args.verbose)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"reelrank: {e}", file=sys.stderr)
        return 2
    from reelrank.warehouse import fastread

    try:
        answer(fastread, cfg)
        return 0
    except fastread.NotReadable as e:
        print(f"reelrank: {e}", file=sys.stderr)
        return 1
    except fastread.duckdb.Error as e:
        log.debug("%s failed", args.command, exc_info=True)
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        print(f"reelrank: {args.command} failed: {first}", file=sys.stderr)
        return 1


def _print_result(args: argparse.Namespace, columns: list[str], rows: list[tuple]) -> None:
    if args.format == "csv":
        import pandas as pd

        pd.DataFrame.from_records(rows, columns=columns).to_csv(sys.stdout, index=False)
        return
    print(format_table(columns, rows[: args.limit]))
    if len(rows) > args.limit:
        print(f"(first {args.limit} rows; use --limit or --format csv for more)")


def format_table(columns: list[str], rows: list[tuple]) -> str:
    """A plain fixed-width table, as a terminal user expects."""
    cells = [[("NULL" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |", line]
    out += [
        "| " + " | ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |"
        for r in cells
    ]
    out.append(line)
    out.append(f"{len(rows)} row{'s' if len(rows) != 1 else ''}")
    return "\n".join(out)


def _numeric(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _runs(args: argparse.Namespace) -> int:
    """Every attempt's latest row (``started`` while it runs or after it was killed), newest first."""
    table = argparse.Namespace(**{**vars(args), "format": "table"})
    return _read_files(args, lambda fastread, cfg: _print_result(table, *fastread.runs(cfg, args.limit)))


def _where(args: argparse.Namespace) -> int:
    """Print the folder of a table's published partition (for reading the Parquet directly), from the
    publish-time manifest."""
    return _read_files(args, lambda fastread, cfg: print(fastread.where(cfg, args.table, args.date)))


def _report(args: argparse.Namespace) -> int:
    from reelrank.report import latest_report

    path = latest_report(config_from_args(args).data_dir)
    if path is None:
        print("reelrank: no report yet: run the nightly first", file=sys.stderr)
        return 1
    print(path)
    return 0


def _spark_conf(args: argparse.Namespace) -> int:
    """Print the config's master and settings as spark-submit options (driver settings must be given at submit
    time): shell-quoted, one per line, or with ``--null`` one argument per NUL-terminated field, which
    ``deploy/submit.sh`` reads so that a value with spaces stays one argument.

    Secrets (the metastore password) are left out: the job sets them from its config when it starts, so they
    never appear on a command line.
    """
    from reelrank.session import spark_settings, split_secrets

    cfg = config_from_args(args)
    options = [("--master", cfg.spark.master)] + [("--conf", f"{k}={v}")
                                                 for k, v in split_secrets(spark_settings(cfg))[0].items()]
    if args.null:
        sys.stdout.write("".join(f"{flag}\0{value}\0" for flag, value in options))
    else:
        print("\n".join(f"{flag} {shlex.quote(value)}" for flag, value in options))
    return 0


def _spark_conf_args(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--null", action="store_true", help="NUL-separated arguments (for scripts) instead of lines")


def _query_args(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--spark", action="store_true",
                   help="run the SQL as Spark SQL through the metastore (slower: starts a JVM); works during a "
                        "publish, and sees the <table>_versions tables")
    p.add_argument("--format", choices=["table", "csv"], default="table")
    p.add_argument("--limit", type=int, default=1000, help="most rows printed (table format)")
    p.add_argument("sql", help="DuckDB SQL over the published tables (Spark SQL with --spark)")


def _stage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", choices=STAGE_NAMES, metavar="STAGE", help=f"one of: {', '.join(STAGE_NAMES)}")
    add_run_args(p)


def _runs_args(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--limit", type=int, default=10, help="how many runs, newest first")


def _where_args(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("table")
    p.add_argument("--date", type=parse_date, default=None, help="run date (default: the latest published)")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; building it imports nothing heavy."""
    p = argparse.ArgumentParser(prog="reelrank", description="A nightly batch recommender on Apache Spark.",
                                epilog="'reelrank COMMAND --help' for a command's options")
    p.add_argument("--version", action="version", version=f"reelrank {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)

    def command(name: str, help: str, description: str, add_args, run) -> None:
        sp = sub.add_parser(name, help=help, description=description)
        add_args(sp)
        sp.set_defaults(run=run)

    nightly, tune = JOBS["nightly"], JOBS["tune"]
    command("nightly", nightly.help, nightly.description, nightly.add_args, nightly.run)
    command("stage", "run one stage (ingest, matrix, ...) of a date's run",
            "Run one stage of the nightly pipeline, continuing that date's run.", _stage_args,
            lambda args: run_pipeline(args.stage, args))
    command("query", "run DuckDB SQL (or Spark SQL: --spark) against the published tables",
            "Run DuckDB SQL over the published tables (Spark SQL with --spark) and print the result.",
            _query_args, _query)
    command("runs", "list recent runs", "List recent runs.", _runs_args, _runs)
    command("where", "print the directory of a table's published partition",
            "Print where a published partition's Parquet files are.", _where_args, _where)
    command("report", "print the path of the latest run's HTML report", "Print the path of the latest run report.",
            add_common, _report)
    command("spark-conf", "print the config's Spark settings as spark-submit options",
            "Print --master and --conf options for spark-submit.", _spark_conf_args, _spark_conf)
    serve = sub.add_parser("serve-sql", help="start/stop the SQL (JDBC/Thrift) server over the warehouse",
                           description=sqlserver.DESCRIPTION)
    sqlserver.add_arguments(serve)
    serve.set_defaults(run=lambda args: sqlserver.run(args, serve))
    command("tune", tune.help, tune.description, tune.add_args, tune.run)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version (0) or a usage error (2): argparse has printed why
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    try:
        return args.run(args)
    except BrokenPipeError:  # `reelrank query ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConfigError as e:  # commands that read the config without a session (spark-conf, report)
        print(f"reelrank: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
