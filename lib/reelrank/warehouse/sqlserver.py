"""SQL access for data engineers: the Spark Thrift Server (JDBC/ODBC, beeline) over the warehouse.

The server is one long-lived Spark application with the same settings as the config's session, so it
needs a metastore shared with the nightly (``warehouse.metastore = "external"``, e.g. conf/postgres.toml;
embedded Derby admits one process). It reads whatever partition the metastore points at when a query
starts: the nightly's location swap is atomic for new queries, and with the partition-file and table-relation
caches off (:data:`SERVER_SETTINGS`) a long-lived connection sees new partitions and appended rows too.

    python -m reelrank.warehouse.sqlserver start --config conf/postgres.toml [--port 10010]
    python -m reelrank.warehouse.sqlserver query "SELECT count(*) FROM reelrank.recommendations"
    python -m reelrank.warehouse.sqlserver stop --config conf/postgres.toml
"""

from __future__ import annotations

import argparse
import csv
import getpass
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from reelrank.cli.bootstrap import add_common, config_from_args, setup_logging
from reelrank.config import Config
from reelrank.warehouse import runlock, storage

log = logging.getLogger(__name__)

DESCRIPTION = "The Spark Thrift Server (JDBC/ODBC, beeline) over the warehouse."

DEFAULT_PORT = 10010
"""Thrift (HiveServer2 binary protocol) port; JDBC URL ``jdbc:hive2://127.0.0.1:10010``."""
DEFAULT_HOST = "127.0.0.1"
"""The server listens on loopback only: it has no authentication."""
THRIFT_CLASS = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"
SERVER_SETTINGS = {
    # Partitioned tables' file listings are cached per table for the server's lifetime by default; after the
    # nightly swaps a partition a long-lived connection would then list the old files (and fail once they are
    # garbage-collected). Off, every query lists the partition the metastore points at now.
    "spark.sql.hive.filesourcePartitionFileCacheSize": "0",
    # Each connection caches a table's resolved plan, file listing included; for an unpartitioned table (runs)
    # a connection that had read it never saw rows appended later by the nightly (measured). Off, every query
    # resolves the table afresh (one metastore call).
    "spark.sql.filesourceTableRelationCacheSize": "0",
}
START_TIMEOUT_S = 300.0
"""Generous: a Spark driver plus its first metastore call take 10-60 s on a busy machine."""
STOP_TIMEOUT_S = 60.0
QUERY_TIMEOUT_S = 600.0


class SqlServerError(RuntimeError):
    """The Thrift server did not start, or a beeline query failed."""


@dataclass(frozen=True)
class SqlServer:
    """A running Thrift server: its process (leader of its own session), port and log."""

    pid: int
    port: int
    host: str
    log_path: Path

    @property
    def url(self) -> str:
        return f"jdbc:hive2://{self.host}:{self.port}"


def spark_home() -> Path:
    """``$SPARK_HOME``, else the pip pyspark package (which ships spark-submit, beeline and the Hive jars)."""
    if os.environ.get("SPARK_HOME"):
        return Path(os.environ["SPARK_HOME"])
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def server_settings(cfg: Config) -> dict[str, str]:
    """The session's settings (same warehouse and metastore as the nightly) plus the server's own."""
    from reelrank.session import spark_settings

    return {**spark_settings(cfg), **SERVER_SETTINGS}


def _properties_line(key: str, value: str) -> str:
    esc = value.replace("\\", "\\\\").replace("\n", "\\n")
    return f"{key}={esc}\n"


def write_properties(settings: dict[str, str], path: Path) -> Path:
    """Write settings as a spark-submit properties file readable by the owner only (it holds the metastore password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(_properties_line(k, v) for k, v in settings.items())
    return path


def server_command(cfg: Config, properties_file: Path, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST) -> list[str]:
    """The spark-submit command line; settings travel in ``properties_file`` so no secret shows in ``ps``."""
    return [
        str(spark_home() / "bin" / "spark-submit"),
        "--master", cfg.spark.master,
        "--name", f"{cfg.spark.app_name}-sql",
        "--properties-file", str(properties_file),
        "--class", THRIFT_CLASS,
        "spark-internal",
        "--hiveconf", f"hive.server2.thrift.port={port}",
        "--hiveconf", f"hive.server2.thrift.bind.host={host}",
    ]


def port_open(port: int, host: str = DEFAULT_HOST, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def run_paths(cfg: Config, port: int) -> tuple[Path, Path, Path]:
    """(pid file, log file, properties file) of the server on ``port``: local process state, under the data dir
    when it is local (:func:`reelrank.warehouse.storage.local_state_dir`)."""
    local = storage.local_state_dir(cfg.data_dir)
    return (
        local / "run" / f"sql-server-{port}.pid",
        local / "logs" / f"sql-server-{port}.log",
        local / "run" / f"sql-server-{port}.conf",
    )


def start(
    cfg: Config, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, timeout_s: float = START_TIMEOUT_S
) -> SqlServer:
    """Start the Thrift server in its own session (setsid) and return once ``port`` answers."""
    if cfg.warehouse.metastore == "derby":
        log.warning("warehouse.metastore is derby: the SQL server and the nightly cannot run at the same time")
        local = storage.local_state_dir(cfg.data_dir)
        other = runlock.holder(cfg.data_dir) or runlock.derby_holder(local / runlock.METASTORE_DIR)
        if other is not None:  # it would only fail later, on Derby's lock, deep in its own log
            raise SqlServerError(f"the embedded metastore under {local} is in use by {other.describe()}; start the "
                                 "SQL server when it has finished, or use an external metastore (conf/postgres.toml)")
    if port_open(port, host):
        raise SqlServerError(f"{host}:{port} is already in use (another SQL server?); choose another --port")
    pid_path, log_path, props = run_paths(cfg, port)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    (storage.local_state_dir(cfg.data_dir) / "tmp").mkdir(parents=True, exist_ok=True)
    write_properties(server_settings(cfg), props)
    env = {**os.environ, "SPARK_LOCAL_IP": host}
    t0 = time.monotonic()
    with log_path.open("ab") as out:
        proc = subprocess.Popen(server_command(cfg, props, port, host), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    pid_path.write_text(f"{proc.pid}\n")
    server = SqlServer(proc.pid, port, host, log_path)
    try:
        while not port_open(port, host):
            if proc.poll() is not None:
                raise SqlServerError(f"SQL server exited with status {proc.returncode}:\n{_tail(log_path)}")
            if time.monotonic() - t0 > timeout_s:
                raise SqlServerError(
                    f"SQL server did not open {host}:{port} within {timeout_s:.0f} s:\n{_tail(log_path)}"
                )
            time.sleep(0.5)
    except BaseException:
        stop(server.pid)
        pid_path.unlink(missing_ok=True)
        raise
    finally:
        props.unlink(missing_ok=True)  # read at launch; do not leave the password on disk
    log.info("SQL server %s ready in %.1f s (pid %d, log %s)", server.url, time.monotonic() - t0, proc.pid, log_path)
    return server


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that has exited: reap it
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def is_server(pid: int) -> bool:
    """Whether ``pid`` is a running Thrift server (guards against a stale pid file naming a reused pid)."""
    try:
        return THRIFT_CLASS.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop the server's process group (SIGTERM, then SIGKILL after ``timeout_s``); False if it was not running."""
    if not _alive(pid):
        return False
    group = os.getpgid(pid) == pid  # started with setsid: the server leads its own group
    kill = (lambda s: os.killpg(pid, s)) if group else (lambda s: os.kill(pid, s))
    try:
        kill(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            log.warning("SQL server pid %d ignored SIGTERM for %.0f s; killing it", pid, timeout_s)
            kill(signal.SIGKILL)
            while _alive(pid) and time.monotonic() < deadline + timeout_s:
                time.sleep(0.2)
    except ProcessLookupError:
        pass
    return True


def stop_from_pidfile(cfg: Config, port: int = DEFAULT_PORT) -> bool:
    """Stop the server that :func:`start` recorded for ``port``; False when none is running."""
    pid_path = run_paths(cfg, port)[0]
    if not pid_path.exists():
        return False
    pid = int(pid_path.read_text().strip())
    stopped = is_server(pid) and stop(pid)
    pid_path.unlink(missing_ok=True)
    return stopped


def beeline_command(
    sql: str | None, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, user: str | None = None
) -> list[str]:
    """beeline with machine-readable output (CSV, no header); ``sql=None`` reads statements from stdin."""
    cmd = [str(spark_home() / "bin" / "beeline"), "-u", f"jdbc:hive2://{host}:{port}", "-n", user or getpass.getuser(),
           "--silent=true", "--outputformat=csv2", "--showHeader=false"]
    return cmd + (["-e", sql] if sql is not None else [])


_PROMPT = re.compile(r"^\d+: jdbc:hive2://\S*>\s?")


def parse_rows(stdout: str) -> list[list[str]]:
    """CSV rows from beeline's output, loosely: prompt prefixes, blank lines and its stray ``null`` dropped."""
    lines = []
    for line in stdout.splitlines():
        line = _PROMPT.sub("", line).rstrip("\r")
        if line.strip() and line.strip() != "null":
            lines.append(line)
    return [row for row in csv.reader(lines)]


def beeline(sql: str, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, user: str | None = None,
            timeout_s: float = QUERY_TIMEOUT_S) -> list[list[str]]:
    """Run ``sql`` over a fresh JDBC connection and return the rows as strings (``NULL`` for nulls)."""
    r = subprocess.run(beeline_command(sql, port, host, user), capture_output=True, text=True, timeout=timeout_s,
                       stdin=subprocess.DEVNULL)
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    if r.returncode != 0 or errors:
        detail = "\n".join(errors) or r.stderr.strip()[-2000:]
        raise SqlServerError(f"beeline exited with status {r.returncode}: {detail}")
    return parse_rows(r.stdout)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``reelrank serve-sql``'s arguments (also ``python -m reelrank.warehouse.sqlserver``'s)."""
    p.add_argument("action", choices=["start", "stop", "status", "query"])
    p.add_argument("sql", nargs="?", help="statement(s) for 'query'")
    add_common(p)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--timeout", type=float, default=START_TIMEOUT_S, help="seconds to wait for the server to start")


def run(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    """``start`` / ``stop`` / ``status`` / ``query`` from parsed :func:`add_arguments` (``p`` reports usage errors)."""
    setup_logging(args.verbose)
    try:
        if args.action == "query":
            if not args.sql:
                p.error("query needs SQL")
            csv.writer(sys.stdout).writerows(beeline(args.sql, args.port, args.host))
            return 0
        cfg = config_from_args(args)
        if args.action == "start":
            server = start(cfg, args.port, args.host, args.timeout)
            print(f"SQL server ready: {server.url} (pid {server.pid}, log {server.log_path})")
            print(f"  {spark_home() / 'bin' / 'beeline'} -u {server.url} -n {getpass.getuser()}")
        elif args.action == "stop":
            print("stopped" if stop_from_pidfile(cfg, args.port) else f"no SQL server running on port {args.port}")
        else:
            up = port_open(args.port, args.host)
            print(f"{'running' if up else 'not running'}: jdbc:hive2://{args.host}:{args.port}")
            return 0 if up else 3
        return 0
    except (SqlServerError, ValueError) as e:
        print(f"reelrank: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """``start`` / ``stop`` / ``status`` / ``query`` for a person or a service manager."""
    p = argparse.ArgumentParser(prog="reelrank serve-sql", description=DESCRIPTION)
    add_arguments(p)
    return run(p.parse_args(argv), p)

if __name__ == "__main__":
    sys.exit(main())
