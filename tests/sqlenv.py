"""Helpers for tests/test_sql_server.py: a throwaway PostgreSQL metastore, env files, nightly subprocesses,
and one long-lived beeline connection fed statement by statement."""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from reelrank.warehouse.sqlserver import SqlServerError, beeline_command, parse_rows

REPO = Path(__file__).resolve().parents[1]
METASTORE_SH = REPO / "deploy" / "metastore.sh"


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the OS's pick; tiny race with other processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float, str, list)):
        return json.dumps(v)  # JSON strings, numbers and flat lists are valid TOML
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(data: dict) -> str:
    """Two levels of tables (``[section]`` and ``[section.table]``), enough for reelrank's env files."""
    out = []
    for section, values in data.items():
        out.append(f"[{section}]")
        out += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
        for name, table in ((k, v) for k, v in values.items() if isinstance(v, dict)):
            out.append(f"[{section}.{name}]")
            out += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(out) + "\n"


def write_env(conf_dir: Path, metastore_port: int, overrides: dict) -> Path:
    """A conf dir holding a copy of base.toml and ``env.toml``: conf/postgres.toml on ``metastore_port``
    plus overrides."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "conf" / "base.toml", conf_dir / "base.toml")
    with (REPO / "conf" / "postgres.toml").open("rb") as f:
        data = tomllib.load(f)
    ms = data["warehouse"]["metastore_conf"]
    url = ms["javax.jdo.option.ConnectionURL"]
    assert ":55432/" in url, f"conf/postgres.toml's URL changed: {url}"
    ms["javax.jdo.option.ConnectionURL"] = url.replace(":55432/", f":{metastore_port}/")
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    env = conf_dir / "env.toml"
    env.write_text(to_toml(data))
    return env


@dataclass
class Metastore:
    """A PostgreSQL metastore in a fresh directory, run through deploy/metastore.sh."""

    dir: Path
    port: int
    password: str
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(cls) -> Metastore:
        # Under /tmp, not pytest's tmp_path: the postgres user cannot enter pytest's 0700 /tmp/pytest-of-root.
        return cls(Path(tempfile.mkdtemp(prefix="rr-ms-")), free_port(), secrets.token_urlsafe(16))

    @property
    def env(self) -> dict[str, str]:
        return {"REELRANK_METASTORE_DIR": str(self.dir), "REELRANK_METASTORE_PORT": str(self.port),
                "REELRANK_METASTORE_PASSWORD": self.password}

    def run(self, action: str, timeout_s: float) -> subprocess.CompletedProcess:
        t0 = time.monotonic()
        r = subprocess.run(["bash", str(METASTORE_SH), action], capture_output=True, text=True, timeout=timeout_s,
                           env={**os.environ, **self.env})
        self.seconds[action] = time.monotonic() - t0
        return r

    def remove(self) -> None:
        self.run("stop", 180)
        shutil.rmtree(self.dir, ignore_errors=True)


def child_env(metastore: Metastore) -> dict[str, str]:
    """The environment of reelrank subprocesses: the metastore password, loopback binding, no data-dir override."""
    env = {k: v for k, v in os.environ.items() if k != "REELRANK_DATA_DIR"}
    return {**env, **metastore.env, "SPARK_LOCAL_IP": "127.0.0.1"}


def start_nightly(config: Path, data_dir: Path, run_date: str, env: dict[str, str], log: Path,
                  *args: str) -> subprocess.Popen:
    """``reelrank nightly`` as a user runs it, in its own process (its own JVM), output to ``log``."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "reelrank.cli", "nightly", "--config", str(config),
                                 "--data-dir", str(data_dir), "--date", run_date, *args],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def command_lines_showing(text: str) -> list[str]:
    """The command lines of this machine's processes that contain ``text`` (what ``ps`` shows any user)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        if text in args:
            found.append(f"{cmdline.parent.name}: {args[:300]}")
    return found


def wait_watching(proc: subprocess.Popen, timeout_s: float, secret: str) -> tuple[int, list[str]]:
    """Wait for ``proc`` while looking every second for ``secret`` on any command line; (exit code, sightings)."""
    deadline, seen = time.time() + timeout_s, []
    while proc.poll() is None and time.time() < deadline:
        seen += command_lines_showing(secret)
        time.sleep(1.0)
    return proc.wait(timeout=max(deadline - time.time(), 1.0)), seen


def kill(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=60)


class BeelineSession:
    """One beeline process, one JDBC connection, statements written to its stdin one at a time.

    Each statement must return a single row whose first column is a unique tag, so the answer can be told
    apart from the echoed statement and prompts; an ``Error:`` line on stderr is that statement's failure.
    """

    def __init__(self, port: int):
        self.proc = subprocess.Popen(beeline_command(None, port) + ["--force=true"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        self.n = 0
        for stream, tag in ((self.proc.stdout, "out"), (self.proc.stderr, "err")):
            threading.Thread(target=self._pump, args=(stream, tag), daemon=True).start()

    def _pump(self, stream, tag: str) -> None:
        for line in stream:
            self.lines.put((tag, line.rstrip("\n")))
        self.lines.put((tag, None))

    def query(self, select_list_from: str, timeout_s: float) -> list[str]:
        """Run ``SELECT '<tag>', <select_list_from>`` and return the row after the tag."""
        self.n += 1
        tag = f"rrq{self.n}"
        self.proc.stdin.write(f"SELECT '{tag}', {select_list_from};\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                kind, line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise SqlServerError(f"beeline exited (status {self.proc.poll()}) while running {tag}")
            if kind == "err" and line.startswith("Error:"):
                raise SqlServerError(line[:500])
            rows = parse_rows(line) if kind == "out" else []
            if rows and rows[0] and rows[0][0] == tag:
                return rows[0][1:]
        raise SqlServerError(f"no answer to {tag} within {timeout_s:.0f} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("!quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=30)
