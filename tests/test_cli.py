"""The command-line contract, run as a user would: a subprocess with its own data dir and metastore."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reelrank.cli import format_table, main

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


@pytest.mark.slow
def test_nightly_then_query(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "base.toml").write_text((REPO / "conf" / "base.toml").read_text())
    (conf / "tiny.toml").write_text(
        "[synthetic]\nusers = 120\nitems = 80\nratings = 3000\n"
        "[spark]\nshuffle_partitions = 2\n[train]\nepochs = 1\nbatch_size = 512\n"
    )
    data = str(tmp_path / "data")
    r = _reelrank("nightly", "--config", str(conf / "tiny.toml"), "--data-dir", data, "--date", "2026-01-02")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reelrank query" in r.stdout and "run_date=2026-01-02" in r.stdout
    for stage in ("ingest", "matrix", "train", "publish"):
        assert f"{stage} " in r.stderr  # one log line per stage
    q = _reelrank("query", "--config", str(conf / "tiny.toml"), "--data-dir", data, "--format", "csv",
                  "SELECT count(*) AS n, count(DISTINCT user_id) AS users FROM reelrank.recommendations")
    assert q.returncode == 0, q.stderr[-3000:]
    n, users = map(int, q.stdout.strip().splitlines()[-1].split(","))
    assert n == users * 10 and users > 0
    bad = _reelrank("query", "--config", str(conf / "tiny.toml"), "--data-dir", data, "SELECT * FROM reelrank.nope")
    assert bad.returncode == 1 and "query failed" in bad.stderr and "Traceback" not in bad.stderr
