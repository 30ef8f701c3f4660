"""SQL access next to the nightly: a PostgreSQL metastore shared by separate processes, the Thrift server, beeline.

The end-to-end test runs everything as separate processes, as in production: deploy/metastore.sh, two
``reelrank nightly`` runs for the same date, the Thrift server, beeline. It never touches the in-process
``spark`` fixture (whose embedded Derby metastore is another, single-process catalogue).
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlenv import BeelineSession, Metastore, child_env, free_port, kill, start_nightly, wait_watching, write_env

from reelrank.cli import main as cli
from reelrank.config import load_config
from reelrank.runs import stage_line
from reelrank.session import spark_settings, split_secrets
from reelrank.warehouse import runlock, sqlserver
from reelrank.warehouse.sqlserver import SqlServerError, beeline

RUN_DATE = "2026-01-02"
# The brief's tiny catalogue; ALS, neighbour blocks and shard files cut down so a nightly is a few dozen Spark jobs.
TINY = {
    "spark": {"shuffle_partitions": 2, "driver_memory": "1g"},
    "synthetic": {"users": 120, "items": 80, "ratings": 3000},
    "train": {"epochs": 1, "batch_size": 512, "reader_workers": 1},
    "als": {"rank": 8, "max_iter": 3, "blocks": 1, "checkpoint_interval": 0},
    "neighbours": {"blocks": 1},
    "features": {"files_per_split": 1},
    "sequence": {"epochs": 2, "max_len": 20, "dim": 16, "eval_every": 1, "batch_size": 64},
}
READ = (f"count(*), count(DISTINCT user_id), min(model), min(model_version), max(model_version) "
        f"FROM reelrank.recommendations WHERE run_date = DATE'{RUN_DATE}'")
NIGHTLY_TIMEOUT_S = 1500.0  # a tiny nightly: 4.4-9.4 min measured here at load 17-24 on 2 cores, far less when idle
QUERY_TIMEOUT_S = 300.0
MAX_READS = 1000  # per loop (a long-lived read takes ~1-3 s, a fresh beeline ~5-20 s)
# reads start when this stage of the second nightly has ended: score, evaluate, publish follow
READ_FROM_STAGE = "train"
KILL_IN_PUBLISH = "publish.registered#5=kill"
"""The second nightly's fate: SIGKILL after 5 of its tables were registered in the metastore."""
READS_AFTER_PUBLISH = 2  # each loop keeps reading until it has this many reads that started after the nightly ended
LONG_LIVED_PAUSE_S = 1.0  # between long-lived reads: each is a Spark job in the server, sharing the 2 cores


def test_parse_rows_drops_prompts_and_stray_null():
    out = "0: jdbc:hive2://127.0.0.1:10010> 1145,116,mlp@a\nnull\n\n\"x,y\",NULL\n0: jdbc:hive2://127.0.0.1:10010> \n"
    assert sqlserver.parse_rows(out) == [["1145", "116", "mlp@a"], ["x,y", "NULL"]]


def test_the_server_on_derby_refuses_to_start_while_a_night_holds_the_data_dir(tmp_path):
    """Derby admits one process: serve-sql says who holds it and starts nothing (no port, no pid file)."""
    cfg = load_config(None, {"warehouse": {"data_dir": str(tmp_path / "data"), "metastore": "derby"}})
    port = free_port()
    with runlock.hold(cfg.data_dir, command="reelrank nightly --date 2026-01-02"):
        with pytest.raises(SqlServerError, match=r"in use by pid \d+ \(reelrank nightly --date 2026-01-02.*external "
                                                 r"metastore"):
            sqlserver.start(cfg, port=port)
    assert not sqlserver.run_paths(cfg, port)[0].exists() and not sqlserver.port_open(port)


def test_server_command_keeps_secrets_off_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("REELRANK_METASTORE_PASSWORD", "pw-not-on-cmdline")
    config = write_env(tmp_path / "conf", 55999, {})
    cfg = load_config(config, {"warehouse": {"data_dir": str(tmp_path / "data")}})
    settings = sqlserver.server_settings(cfg)
    assert settings["spark.hadoop.javax.jdo.option.ConnectionPassword"] == "pw-not-on-cmdline"
    assert settings["spark.hadoop.javax.jdo.option.ConnectionURL"] == "jdbc:postgresql://127.0.0.1:55999/metastore"
    assert settings["spark.sql.hive.filesourcePartitionFileCacheSize"] == "0"
    assert settings["spark.sql.filesourceTableRelationCacheSize"] == "0"
    assert settings["spark.driver.extraClassPath"] == "/usr/share/java/postgresql.jar"
    props = sqlserver.write_properties(settings, tmp_path / "p.conf")
    assert props.stat().st_mode & 0o077 == 0
    assert "ConnectionPassword=pw-not-on-cmdline\n" in props.read_text()
    cmd = sqlserver.server_command(cfg, props, port=10555)
    assert "pw-not-on-cmdline" not in " ".join(cmd)
    assert cmd[cmd.index("--class") + 1] == sqlserver.THRIFT_CLASS
    assert "hive.server2.thrift.port=10555" in cmd and "hive.server2.thrift.bind.host=127.0.0.1" in cmd


def test_spark_conf_and_session_keep_the_password_off_the_command_line(tmp_path, monkeypatch, capsys):
    """``reelrank spark-conf`` (what deploy/submit.sh passes to spark-submit) leaves the password out; the
    session sets it on the Hadoop configuration after the JVM has started."""
    monkeypatch.setenv("REELRANK_METASTORE_PASSWORD", "pw-not-on-cmdline")
    config = write_env(tmp_path / "conf", 55999, {})
    assert cli.main(["spark-conf", "--config", str(config), "--data-dir", str(tmp_path / "data")]) == 0
    printed = capsys.readouterr().out
    assert "pw-not-on-cmdline" not in printed and "ConnectionPassword" not in printed
    assert "--conf spark.hadoop.javax.jdo.option.ConnectionURL=jdbc:postgresql://127.0.0.1:55999/metastore" in printed
    cfg = load_config(config, {"warehouse": {"data_dir": str(tmp_path / "data")}})
    public, secret = split_secrets(spark_settings(cfg))
    assert secret == {"spark.hadoop.javax.jdo.option.ConnectionPassword": "pw-not-on-cmdline"}
    assert public["spark.hadoop.javax.jdo.option.ConnectionUserName"] == "metastore"


@pytest.fixture(scope="module")
def metastore():
    """deploy/metastore.sh on a fresh directory and port; stopped and removed afterwards."""
    ms = Metastore.create()
    try:
        r = ms.run("install", 900)
        if r.returncode != 0:
            pytest.skip(
                f"cannot install PostgreSQL and its JDBC driver here (needs root and apt): {r.stderr.strip()[-400:]}"
            )
        r = ms.run("start", 900)
        assert r.returncode == 0, r.stderr[-3000:]
        status = ms.run("status", 120)
        tables = re.search(r"(\d+) tables", status.stderr)
        assert status.returncode == 0 and tables and int(tables.group(1)) >= 40, status.stderr  # 44 with Hive 2.3.9
        yield ms
    finally:
        ms.remove()


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def _run_id(log: Path) -> str:
    m = re.search(r"^run (\S+) published run_date=" + RUN_DATE, log.read_text(), re.M)
    assert m, f"no 'run ... published' line in {log}:\n{_tail(log)}"
    return m.group(1)


def _publish_window(log: Path, ended: float) -> tuple[float, float]:
    """Wall-clock seconds of the publish stage, from its log line ("YYYY-MM-DD HH:MM:SS INFO  publish ... 12.3 s")."""
    m = re.search(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) INFO\s+publish\s.*?([\d.]+) s ", log.read_text(), re.M)
    assert m, f"no publish line in {log}"
    end = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    assert end <= datetime.fromtimestamp(ended) + timedelta(minutes=1)
    return end.timestamp() - float(m.group(2)) - 1.0, end.timestamp() + 1.0


def _wait_for_stage(log: Path, stage: str, proc: subprocess.Popen) -> None:
    """Return once the nightly logged the end of ``stage``; fail if it exits or takes too long first."""
    # "... INFO  score       1,200 recommendations      1.5 s  ...": the count names what it counts
    done = stage_line(stage)
    deadline = time.time() + NIGHTLY_TIMEOUT_S
    while not done.search(log.read_text(errors="replace")):
        assert proc.poll() is None, (
            f"the nightly exited ({proc.returncode}) before its {stage} stage ended:\n{_tail(log)}"
        )
        assert time.time() < deadline, f"no {stage} stage within {NIGHTLY_TIMEOUT_S:.0f} s"
        time.sleep(1.0)


class Reads:
    """A bounded loop of reads on one thread: (started, finished, row or error text)."""

    def __init__(self, read):
        self.read = read
        self.results: list[tuple[float, float, tuple | str]] = []
        self.stop_after: float | None = None  # stop once READS_AFTER_PUBLISH reads started after this time
        self.deadline = time.time() + NIGHTLY_TIMEOUT_S + 2 * QUERY_TIMEOUT_S
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _done(self) -> bool:
        if len(self.results) >= MAX_READS or time.time() > self.deadline:
            return True
        return self.stop_after is not None and sum(r[0] > self.stop_after for r in self.results) >= READS_AFTER_PUBLISH

    def _loop(self) -> None:
        while not self._done():
            t0 = time.time()
            try:
                row: tuple | str = tuple(self.read())
            except (SqlServerError, subprocess.TimeoutExpired, IndexError) as e:
                row = f"error: {e}"
            except (OSError, ValueError) as e:  # the connection was closed under us: the test is ending
                self.results.append((t0, time.time(), f"error: {e}"))
                return
            self.results.append((t0, time.time(), row))

    def halt(self) -> None:
        """Stop after the read in flight (used when the test fails half-way)."""
        self.deadline = 0.0


@pytest.mark.slow
def test_reads_stay_consistent_while_a_nightly_publishes(tmp_path, metastore, monkeypatch):
    for k, v in metastore.env.items():
        monkeypatch.setenv(k, v)  # the server's settings expand ${REELRANK_METASTORE_PASSWORD} from our environment
    env = child_env(metastore)
    config = write_env(tmp_path / "conf", metastore.port, TINY)
    data = tmp_path / "data"
    cfg = load_config(config, {"warehouse": {"data_dir": str(data)}})
    logs = [tmp_path / "nightly-1.log", tmp_path / "nightly-2.log", tmp_path / "nightly-2-resumed.log"]
    first = second = third = server = session = None
    loops: list[Reads] = []
    timings: dict[str, float] = {}
    try:
        # The first nightly and the server start side by side: two processes on one metastore from the start.
        t0 = time.time()
        first = start_nightly(config, data, RUN_DATE, env, logs[0])
        port = free_port()
        server = sqlserver.start(cfg, port, timeout_s=600)
        timings["server start"] = time.time() - t0
        code, sightings = wait_watching(first, NIGHTLY_TIMEOUT_S, metastore.password)
        assert code == 0, _tail(logs[0])
        assert sightings == [], "the metastore password is visible in ps"  # yet the scram-auth metastore took it
        timings["nightly 1"] = time.time() - t0
        run1 = _run_id(logs[0])

        t1 = time.time()
        old = tuple(beeline(f"SELECT {READ}", port)[0])
        timings["first fresh beeline"] = time.time() - t1
        session = BeelineSession(port)
        assert tuple(session.query(READ, QUERY_TIMEOUT_S)) == old
        runs_sql = f"count(*) FROM reelrank.runs WHERE run_date = DATE'{RUN_DATE}' AND status = 'published'"
        assert session.query(runs_sql, QUERY_TIMEOUT_S) == ["1"]  # now this connection has read the runs table

        # The second nightly for the same date, read from fresh connections and from one long-lived connection. It
        # is SIGKILLed while publishing (after 5 of its tables were registered), then resumed: the readers see the
        # old partition until the resumed run publishes, then the new one, never a mix.
        t2 = time.time()
        second = start_nightly(config, data, RUN_DATE, {**env, "REELRANK_FAILPOINTS": KILL_IN_PUBLISH}, logs[1])

        # Reading from the start would only slow the nightly down (each fresh beeline is a JVM): start a couple of
        # stages before publish, so that the loops see the old partition, the swap, then the new one.
        _wait_for_stage(logs[1], READ_FROM_STAGE, second)
        timings["reads start after"] = time.time() - t2

        def long_lived_read() -> list[str]:
            time.sleep(LONG_LIVED_PAUSE_S)
            return session.query(READ, QUERY_TIMEOUT_S)

        loops = [Reads(lambda: beeline(f"SELECT {READ}", port, timeout_s=QUERY_TIMEOUT_S)[0]), Reads(long_lived_read)]
        for loop in loops:
            loop.thread.start()
        assert second.wait(timeout=NIGHTLY_TIMEOUT_S) == -signal.SIGKILL, _tail(logs[1])
        killed = logs[1].read_text(errors="replace")
        assert re.search(r"INFO  score ", killed) and "published run" not in killed, _tail(logs[1])
        timings["nightly 2 killed"] = time.time() - t2
        resumed_at = time.time()
        third = start_nightly(config, data, RUN_DATE, env, logs[2], "--resume")
        assert third.wait(timeout=NIGHTLY_TIMEOUT_S) == 0, _tail(logs[2])
        assert "skipped: outputs of run" in logs[2].read_text(errors="replace")
        ended = time.time()
        timings["nightly 2 resumed"] = ended - resumed_at
        for loop in loops:
            loop.stop_after = ended
        for loop in loops:
            loop.thread.join(timeout=2 * QUERY_TIMEOUT_S + 60)
            assert not loop.thread.is_alive(), "a read loop did not finish"
        run2 = _run_id(logs[2])
        assert run2 in killed  # the resumed run is the killed attempt, finished

        # Both runs are recorded; their own row counts say what a complete partition holds.
        runs = {r[0]: r[1:] for r in beeline(f"SELECT run_id, status, stage_rows['score'], published_model "
                                             f"FROM reelrank.runs WHERE run_date = DATE'{RUN_DATE}' "
                                             "AND status != 'started'", port)}
        assert set(runs) == {run1, run2}, runs
        assert all(status == "published" for status, _, _ in runs.values()), runs
        attempts = beeline(f"SELECT count(*) FROM reelrank.runs WHERE run_id = '{run2}' AND status = 'started'", port)
        assert attempts == [["2"]]  # the killed attempt and its resumption each have a started row
        new = tuple(beeline(f"SELECT {READ}", port)[0])
        for row, run_id in ((old, run1), (new, run2)):
            # the ranker or the candidate source that beat it, fitted by this run
            assert row[0] == runs[run_id][1] and row[2:] == (runs[run_id][2], run_id, run_id), (row, run_id, runs)
        assert int(new[0]) <= 10 * int(new[1]) and int(old[0]) <= 10 * int(old[1])  # top 10 per user

        publish = _publish_window(logs[2], ended)
        during = 0
        for name, loop in zip(("fresh connections", "long-lived connection"), loops, strict=True):
            rows = [r[2] for r in loop.results]
            errors = [r for r in rows if isinstance(r, str)]
            assert not errors, f"{name}: {len(errors)} failed reads, first: {errors[0]}"
            assert set(rows) <= {old, new}, f"{name}: partial or foreign reads {set(rows) - {old, new}}"
            flips = [i for i in range(1, len(rows)) if rows[i - 1] == new and rows[i] == old]
            assert not flips, f"{name}: went back to the old partition after seeing the new one"
            assert rows[0] == old and rows[-1] == new, f"{name}: did not read across the swap ({len(rows)} reads)"
            before = [r[2] for r in loop.results if r[1] < resumed_at]
            assert before and set(before) == {old}, f"{name}: saw the killed attempt's tables"
            during += sum(start <= publish[1] and end >= publish[0] for start, end, _ in loop.results)
            timings[f"{name}: reads"] = len(rows)
            timings[f"{name}: s per read"] = (loop.results[-1][1] - loop.results[0][0]) / len(rows)
        timings["reads overlapping publish"] = during
        timings["publish s"] = publish[1] - publish[0] - 2.0
        assert during > 0, "no read overlapped the publish stage"

        # A failing statement is an error, not an empty result.
        with pytest.raises(SqlServerError, match="TABLE_OR_VIEW_NOT_FOUND"):
            beeline("SELECT * FROM reelrank.no_such_table", port)
        # The long-lived connection sees the row the second run appended to the unpartitioned runs table.
        assert session.query(runs_sql, QUERY_TIMEOUT_S) == ["2"], "stale runs listing on a long-lived connection"
    finally:
        for proc in (first, second, third):
            kill(proc)
        for loop in loops:
            loop.halt()
        if session is not None:
            session.close()
        for loop in loops:
            if loop.thread.is_alive():
                loop.thread.join(timeout=QUERY_TIMEOUT_S + 30)
        if server is not None:
            sqlserver.stop(server.pid)
        print("\nsql-server test timings:", {k: round(v, 1) for k, v in {**metastore.seconds, **timings}.items()})
    assert not sqlserver.port_open(port), "the Thrift server still answers after stop"
    # The planted password is in no log, and in no file under the data dir: tables (runs included), run state,
    # reports, the server's own files.
    secret = metastore.password.encode()
    assert [p.name for p in logs if secret in p.read_bytes()] == []
    assert [str(p) for p in data.rglob("*") if p.is_file() and secret in p.read_bytes()] == []
