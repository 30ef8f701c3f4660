"""The command-line contract, run as a user would: a subprocess with its own data dir and metastore."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from reelrank.cli.main import format_table, main

REPO = Path(__file__).resolve().parents[1]


def _reelrank(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reelrank.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=900)


def test_format_table():
    out = format_table(["user_id", "score"], [("u1", 0.5), ("u22", None)])
    lines = out.splitlines()
    assert lines[1] == "| user_id | score |"
    assert lines[3] == "| u1      |   0.5 |" and lines[4] == "| u22     | NULL  |"
    assert lines[-1] == "2 rows"


def test_usage_lists_commands(capsys):
    assert main([]) == 2
    assert "nightly" in capsys.readouterr().out


def test_bad_config_is_one_clear_line(tmp_path):
    bad = tmp_path / "env.toml"
    (tmp_path / "base.toml").write_text((REPO / "conf" / "base.toml").read_text())
    bad.write_text("[score]\ntop_n = 'x'\n")
    r = _reelrank("nightly", "--config", str(bad))
    assert r.returncode == 2
    assert "score.top_n must be int" in r.stderr and "Traceback" not in r.stderr


def _query_csv(conf: Path, data: str, sql: str) -> list[list[str]]:
    r = _reelrank("query", "--config", str(conf), "--data-dir", data, "--format", "csv", sql)
    assert r.returncode == 0, r.stderr[-3000:]
    return [line.split(",") for line in r.stdout.strip().splitlines()[1:]]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A tiny nightly through the command line, in its own data dir and metastore."""
    tmp = tmp_path_factory.mktemp("cli")
    conf = tmp / "conf"
    conf.mkdir()
    (conf / "base.toml").write_text((REPO / "conf" / "base.toml").read_text())
    (conf / "tiny.toml").write_text(
        "[synthetic]\nusers = 120\nitems = 400\nratings = 3000\n"
        "[spark]\nshuffle_partitions = 2\n[train]\nepochs = 1\nbatch_size = 512\n"
        # the sequence models as small as the catalogue: two epochs, not base.toml's 200 with patience
        "[sequence]\nepochs = 2\nmax_len = 20\ndim = 16\neval_every = 1\nbatch_size = 64\n"
        # ALS, neighbour blocks and shard files cut down as in test_sql_server's TINY: fewer Spark jobs a night
        "[als]\nrank = 8\nmax_iter = 3\nblocks = 1\ncheckpoint_interval = 0\n[neighbours]\nblocks = 1\n"
        "[features]\nfiles_per_split = 1\n"
    )
    data = str(tmp / "data")
    r = _reelrank("nightly", "--config", str(conf / "tiny.toml"), "--data-dir", data, "--date", "2026-01-02")
    return conf / "tiny.toml", data, r


@pytest.mark.slow
def test_nightly_then_query(published):
    conf, data, r = published
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reelrank query" in r.stdout and "run_date=2026-01-02" in r.stdout
    # the summary's example query, pasted as printed, finds this run's warehouse (--config and --data-dir included)
    pasted = next(line.strip() for line in r.stdout.splitlines() if " query " in line and "recommendations" in line)
    assert f"--data-dir {data}" in pasted and f"--config {conf}" in pasted
    answer = subprocess.run(shlex.split(pasted), capture_output=True, text=True, timeout=300)
    assert answer.returncode == 0 and "20 rows" in answer.stdout, answer.stderr[-2000:]
    for stage, counts in (("ingest", "accepted interactions"), ("matrix", "interactions"), ("train", "training rows"),
                          ("publish", "tables")):
        assert re.search(rf"INFO  {stage} +[\d,]+ {counts} +[\d.]+ s", r.stderr), stage  # one named line a stage
    # every line is dated: Spark's start-up chatter is silenced by the package's log4j2 file
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in r.stderr.splitlines() if line.strip()), \
        r.stderr[:3000]
    (n, users), = [
        list(map(int, row))
        for row in _query_csv(conf, data, "SELECT count(*), count(DISTINCT user_id) FROM reelrank.recommendations")
    ]
    assert n == users * 10 and users > 0
    bad = _reelrank("query", "--config", str(conf), "--data-dir", data, "SELECT * FROM reelrank.nope")
    assert bad.returncode == 1 and "query failed" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_report_command_and_notebook(published, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    conf, data, first = published
    assert first.returncode == 0, first.stderr[-3000:]
    r = _reelrank("report", "--config", str(conf), "--data-dir", data)
    assert r.returncode == 0, r.stderr
    report = Path(r.stdout.strip())
    assert report.name == "report.html" and all((report.parent / p).stat().st_size > 1000
                                               for p in ("metrics.png", "scores.png", "coverage.png", "loss.png"))
    nb = nbformat.read(REPO / "notebooks" / "explore_recommendations.ipynb", as_version=4)
    os.environ.update(REELRANK_CONFIG=str(conf), REELRANK_DATA_DIR=data)
    try:
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        os.environ.pop("REELRANK_CONFIG"), os.environ.pop("REELRANK_DATA_DIR")
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "catalogue coverage" in outputs and "rows for" in outputs
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # NDCG over runs, coverage
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


@pytest.mark.slow
def test_where_and_duckdb_read_the_published_parquet(published):
    import duckdb

    conf, data, first = published
    assert first.returncode == 0, first.stderr[-3000:]
    r = _reelrank("where", "recommendations", "--date", "2026-01-02", "--config", str(conf), "--data-dir", data)
    assert r.returncode == 0 and "starting Spark" not in r.stderr, r.stderr[-2000:]  # the manifest answered
    folder = r.stdout.strip()
    ((n,),) = duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/*.parquet')").fetchall()
    (expected,), = [list(map(int, row)) for row in _query_csv(
        conf, data, "SELECT count(*) FROM reelrank.recommendations WHERE run_date = DATE'2026-01-02'")]
    assert n == expected > 0



ORDINARY_QUERIES = (
    "SELECT run_date, count(*) AS n, count(DISTINCT user_id) AS users FROM reelrank.recommendations "
    "GROUP BY run_date ORDER BY run_date",
    "SELECT model, metric, k, value FROM reelrank.metrics ORDER BY run_date, model, metric, k, value",
    "SELECT p.run_id, r.status, count(*) AS n FROM reelrank.published_runs p JOIN reelrank.runs r "
    "ON p.run_id = r.run_id GROUP BY p.run_id, r.status ORDER BY p.run_id, r.status",
)
"""Queries whose text means the same in both dialects: plain columns, aliases, count, joins, ORDER BY."""


@pytest.mark.slow
def test_spark_sql_gives_duckdbs_answer_to_ordinary_queries(published):
    conf, data, first = published
    assert first.returncode == 0, first.stderr[-3000:]
    for sql in ORDINARY_QUERIES:
        fast = _reelrank("query", "--config", str(conf), "--data-dir", data, "--format", "csv", sql)
        assert fast.returncode == 0 and "starting Spark" not in fast.stderr, fast.stderr[-2000:]
        spark = _reelrank("query", "--spark", "--config", str(conf), "--data-dir", data, "--format", "csv", sql)
        assert spark.returncode == 0 and "starting Spark" in spark.stderr, spark.stderr[-2000:]
        assert fast.stdout == spark.stdout and len(fast.stdout.splitlines()) > 1, sql


@pytest.mark.slow
def test_query_says_publish_under_way_while_the_manifest_is_behind(published):
    """A ``published_runs`` folder the manifest does not list (a flip whose manifest is not written yet): DuckDB
    does not answer from files the warehouse may no longer show; ``runs`` and ``--spark`` still answer."""
    conf, data, first = published
    assert first.returncode == 0, first.stderr[-3000:]
    flipped = Path(data) / "warehouse" / "reelrank.db" / "published_runs" / "run_date=2099-01-01" / "not-yet"
    flipped.mkdir(parents=True)
    try:
        r = _reelrank("query", "--config", str(conf), "--data-dir", data, "SELECT count(*) FROM reelrank.metrics")
        assert r.returncode == 1 and r.stderr == "reelrank: publish under way, retry or use --spark\n", r.stderr
        assert not r.stdout
        w = _reelrank("where", "metrics", "--config", str(conf), "--data-dir", data)
        assert w.returncode == 1 and w.stderr == "reelrank: publish under way, retry in a moment\n", w.stderr
        listed = _reelrank("runs", "--config", str(conf), "--data-dir", data)
        assert listed.returncode == 0 and "| published" in listed.stdout, listed.stderr[-2000:]
    finally:
        flipped.rmdir()
        flipped.parent.rmdir()
    r = _reelrank("query", "--config", str(conf), "--data-dir", data, "SELECT count(*) AS n FROM reelrank.metrics")
    assert r.returncode == 0, r.stderr[-2000:]

NOT_RUN_HERE = {
    "make run": "run by hand on a fresh clone before every stop (the closing note says so)",
    "make test": "the command CI runs",
    "make package": "builds the 708 MB executors' environment: tests/test_cluster.py builds and submits with it",
    "spark-submit": "a whole nightly through spark-submit: tests/test_cluster.py",
    "deploy/submit.sh": "a standalone cluster: tests/test_cluster.py submits the jobs with it",
    "export": "sets variables for the commands after it",
    "deploy/metastore.sh": "PostgreSQL metastore: tests/test_sql_server.py",
    ".venv/bin/reelrank nightly --config conf/postgres.toml": "PostgreSQL metastore: tests/test_sql_server.py",
    ".venv/bin/reelrank serve-sql": "Thrift server: tests/test_sql_server.py",
    '"$(.venv/bin/python -c': "beeline against the Thrift server: tests/test_sql_server.py",
    "python3.11 -m venv /opt": "installs into /opt: what `make install` does in .venv",
    "/opt/reelrank-venv": "the installed wheel: `make run` runs the same nightly from .venv",
    "cd /tmp && setsid": "a standalone cluster: tests/test_cluster.py starts one the same way (spark-class)",
    "for i in 1 2": "a standalone cluster: tests/test_cluster.py",
    "curl": "a standalone cluster's or history server's web API",
    "mkdir -p /tmp/rr-conf": "a cluster night's config",
    "SPARK_HOME=": "the history server of a cluster's event logs",
    "$SPARK_HOME": "the history server of a cluster's event logs",
    "SPARK_HISTORY_OPTS=": "the history server of a cluster's event logs",
    "reelrank nightly [": "a synopsis, not a command",
    "[--source": "a synopsis, not a command",
    "reelrank query [": "a synopsis, not a command",
    "reelrank stage ": "a synopsis, not a command",
    "reelrank tune ": "a grid search (minutes): tests/test_factorize.py tunes in process",
    "reelrank --version": "tests/test_cli.py::test_usage_lists_commands and --help",
    ". .venv/bin/activate && spark-submit": "a whole nightly through spark-submit: tests/test_cluster.py",
}
"""README commands this test does not run, each with where it is exercised instead (a new README command fails the
test below until it is run there or listed here)."""


def readme_commands(path: Path) -> list[str]:
    """The shell lines of a Markdown file's fenced blocks, continuation lines joined, comment lines dropped."""
    lines, block, fenced = [], [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            block.append(line)
    joined = "\n".join(block).replace("\\\n", " ")
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.startswith("# built"):
            lines.append(line.strip())
    return lines


@pytest.mark.slow
def test_readme_commands_work_when_pasted(published):
    """Every command of README.md and deploy/README.md that a published warehouse answers runs as written (the
    data dir from $REELRANK_DATA_DIR, `reelrank` on PATH as in an activated venv); every other one is listed in
    NOT_RUN_HERE with where it is exercised."""
    conf, data, first = published
    assert first.returncode == 0, first.stderr[-3000:]
    env = {**os.environ, "REELRANK_DATA_DIR": data,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    ran = []
    for readme in (REPO / "README.md", REPO / "deploy" / "README.md"):
        for cmd in readme_commands(readme):
            if any(cmd.startswith(prefix) for prefix in NOT_RUN_HERE):
                continue
            assert re.match(r"(\.venv/bin/)?(reelrank (query|runs|where|report)\b|python -c)", cmd), \
                f"{readme.name}: a command neither run here nor listed in NOT_RUN_HERE: {cmd}"
            r = subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0 and r.stdout.strip() and "Traceback" not in r.stderr, (cmd, r.stderr[-2000:])
            ran.append(cmd)
    assert len(ran) >= 8, ran
