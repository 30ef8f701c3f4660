"""spark-submit and deploy/submit.sh: what the command line says wins over the config; values keep their spaces."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from clusterenv import REPO, clean_env, environment, event_logs, run, write_small_config

from reelrank.config import load_config
from reelrank.session import resolve_master, spark_settings

SUBMIT = REPO / "deploy" / "submit.sh"
VENV_BIN = REPO / ".venv" / "bin"


def _dry_run(*args: str, env: dict[str, str] | None = None) -> list[str]:
    """The spark-submit line deploy/submit.sh would run, split as the shell would."""
    r = subprocess.run(["bash", str(SUBMIT), "--dry-run", *args], capture_output=True, text=True,
                       env=env or clean_env(), check=True)
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("spark-submit line: ")
    return shlex.split(line.removeprefix("spark-submit line: "))


def _confs(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")


def test_submit_keeps_values_with_spaces_whole(tmp_path):
    config = write_small_config(tmp_path / "conf", tmp_path / "data")
    argv = _dry_run(str(config), "nightly", "--date", "2026-11-23")
    confs = _confs(argv)
    assert confs["spark.reelrank.note"] == "two words"
    java_opts = f"-Dderby.system.home={tmp_path / 'data'} -Dreelrank.a=1 -Dreelrank.b=x"
    assert confs["spark.driver.extraJavaOptions"] == java_opts
    assert argv[argv.index("--master") + 1] == "local[2,2]"  # the config's, as nothing else named one
    script, *job_args = argv[-5:]
    assert script.endswith("jobs/nightly.py") and Path(script).is_file()
    assert job_args == ["--config", str(config), "--date", "2026-11-23"]
    assert argv[argv.index("--files") + 1] == str(config)


def test_submit_settings_follow_the_jobs_data_dir(tmp_path):
    """The warehouse, metastore and event log settings come from the job's --data-dir, not the config's."""
    config = write_small_config(tmp_path / "conf", tmp_path / "data")
    other = tmp_path / "other dir"
    for args in (["--data-dir", str(other)], [f"--data-dir={other}"]):
        confs = _confs(_dry_run(str(config), "nightly", "--date", "2026-11-23", *args))
        assert confs["spark.sql.warehouse.dir"] == str(other / "warehouse")
        assert confs["spark.eventLog.dir"] == str(other / "spark-events")


def test_submit_master_option_and_environment_win_over_the_config(tmp_path):
    config = write_small_config(tmp_path / "conf", tmp_path / "data")
    argv = _dry_run("--master", "local[1]", str(config), "ingest")
    assert argv[argv.index("--master") + 1] == "local[1]" and argv.count("--master") == 1
    argv = _dry_run(str(config), "ingest", env=clean_env(SPARK_MASTER="spark://127.0.0.1:7999"))
    assert argv[argv.index("--master") + 1] == "spark://127.0.0.1:7999"


def test_submit_ships_the_packed_environment_and_the_config(tmp_path):
    config = write_small_config(tmp_path / "conf", tmp_path / "data")
    tarball = tmp_path / "env.tar.gz"
    tarball.write_bytes(b"")  # dry run: only its path matters
    argv = _dry_run("--env", str(tarball), "--deploy-mode", "cluster", str(config), "nightly")
    assert argv[argv.index("--archives") + 1] == f"{tarball}#env"
    assert _confs(argv)["spark.pyspark.python"] == "./env/bin/python"
    assert "spark.pyspark.driver.python" not in _confs(argv)  # a cluster-mode driver runs in the packed env too
    assert argv[argv.index("--config") + 1] == "small.toml"  # the shipped copy, in the driver's working directory


def test_submit_rejects_a_missing_config_and_an_unknown_job(tmp_path):
    missing = tmp_path / "nope.toml"
    r = subprocess.run(["bash", str(SUBMIT), str(missing), "nightly"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == f"deploy/submit.sh: config file not found: {missing}"
    config = write_small_config(tmp_path / "conf", tmp_path / "data")
    r = subprocess.run(["bash", str(SUBMIT), str(config), "nightlyy"], capture_output=True, text=True)
    assert r.returncode == 2 and "no job nightlyy" in r.stderr


def test_master_outside_spark_submit_comes_from_the_environment_then_the_config(tmp_path, monkeypatch):
    cfg = load_config(write_small_config(tmp_path / "conf", tmp_path / "data"))
    monkeypatch.delenv("SPARK_MASTER", raising=False)
    assert resolve_master(cfg, None) == ("local[2,2]", "config [spark] master")
    monkeypatch.setenv("SPARK_MASTER", "local[1]")
    assert resolve_master(cfg, None) == ("local[1]", "$SPARK_MASTER")
    assert resolve_master(cfg, {"spark.master": "spark://h:7077"}) == ("spark://h:7077", "spark-submit")
    assert spark_settings(cfg)["spark.eventLog.dir"] == str(tmp_path / "data" / "spark-events")


@pytest.mark.slow
def test_spark_submit_master_wins_over_the_config(tmp_path):
    """``spark-submit --master local[1] jobs/ingest.py`` runs on local[1] although the config says local[2]; the
    config fills in what spark-submit did not say (its warehouse, an extra setting)."""
    data = tmp_path / "data"
    config = write_small_config(tmp_path / "conf", data)
    log = tmp_path / "ingest.log"
    rc, _ = run([str(VENV_BIN / "spark-submit"), "--master", "local[1]", str(REPO / "jobs" / "ingest.py"),
                 "--config", str(config), "--date", "2026-11-23"], cwd=tmp_path, log=log,
                env=clean_env(PATH=f"{VENV_BIN}:{os.environ['PATH']}"),  # as with the venv activated
                timeout=600)
    text = log.read_text()
    assert rc == 0, text[-3000:]
    assert "starting Spark (master local[1] from spark-submit" in text
    [events] = event_logs(data)
    props = environment(events)["Spark Properties"]
    assert props["spark.master"] == "local[1]"
    assert props["spark.reelrank.note"] == "two words"
    assert props["spark.sql.warehouse.dir"] == str(data / "warehouse")
    assert os.listdir(data / "warehouse")
