"""The nightly on a real standalone Spark cluster (a master and two workers on 127.0.0.1), submitted with
deploy/submit.sh and the packed environment of ``make package``, against the suite's local-mode night of the same
config and data (conftest's ``local_night``, in process: the same tiny catalogue, seed and date).

The cluster night runs from the packed environment unpacked outside the source tree (a non-editable install), so
this is also the check that the wheel works on its own. Skip locally with ``-m "not cluster"``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clusterenv import REPO, clean_env, environment, event_logs, packed_env, run, unpack, write_small_config
from conftest import LOCAL_NIGHT_DAY
from sqlenv import free_port

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DAY = LOCAL_NIGHT_DAY
WORKERS = 2
NIGHT_TIMEOUT_S = 1500
FACTOR_TOLERANCE = 1e-4  # the bound for ALS factors computed on another partitioning
SAME_LISTS_SHARE = 0.95
NDCG_TOLERANCE = 0.01


class Cluster:
    """A standalone master and workers from the packed environment's pyspark, stopped by PID."""

    def __init__(self, spark_home: Path, root: Path) -> None:
        self.spark_home, self.root = spark_home, root
        self.port, self.ui_port = free_port(), free_port()
        self.procs: list[subprocess.Popen] = []
        self.env = clean_env(SPARK_HOME=str(spark_home), SPARK_WORKER_DIR=str(root / "work"),
                             SPARK_LOG_DIR=str(root / "logs"))

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _start(self, name: str, *args: str) -> None:
        log = (self.root / f"{name}.log").open("w")
        self.procs.append(subprocess.Popen([str(self.spark_home / "bin" / "spark-class"), *args], cwd=self.root,
                                           env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def start(self, timeout_s: float = 120) -> None:
        self._start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.port), "--webui-port", str(self.ui_port))
        for i in range(WORKERS):
            work = self.root / f"worker-{i}"
            work.mkdir(parents=True)
            self._start(f"worker-{i}", "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                        "--cores", "1", "--memory", "2g", "--work-dir", str(work), "--webui-port", str(free_port()))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as r:
                    if json.load(r).get("aliveworkers", 0) >= WORKERS:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError(f"{WORKERS} workers did not register within {timeout_s} s: see {self.root}/*.log")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def nights(tmp_path_factory, local_night):
    """The cluster's night beside the suite's local one: where each published, the cluster's log and seconds."""
    root = tmp_path_factory.mktemp("cluster")
    tarball = packed_env()
    env_dir = unpack(tarball, root / "env")
    python = env_dir / "bin" / "python"
    where = "import os, pyspark; print(os.path.dirname(pyspark.__file__))"
    spark_home = Path(subprocess.run([str(python), "-c", where], capture_output=True, text=True, check=True,
                                     cwd=root, env=clean_env()).stdout.strip())
    _, local_data, local_db = local_night
    out = {"root": root, "local": local_data / "warehouse" / f"{local_db}.db",
           "on-cluster": root / "on-cluster" / "warehouse" / "reelrank.db"}
    config = write_small_config(root / "conf", root / "unused")
    cluster = Cluster(spark_home, root / "cluster-procs")
    (root / "cluster-procs").mkdir()
    try:
        cluster.start()
        out["url"] = cluster.url
        out["cluster_rc"], out["cluster_s"] = run(
            ["bash", str(REPO / "deploy" / "submit.sh"), "--master", cluster.url, "--env", str(tarball),
             str(config), "nightly", "--data-dir", str(root / "on-cluster"), "--date", DAY],
            cwd=root, env=clean_env(RR_VENV=str(env_dir)), log=root / "cluster.log", timeout=NIGHT_TIMEOUT_S)
    finally:
        cluster.stop()
    summary = {k: v for k, v in out.items() if k.endswith(("_s", "_rc"))}
    print(f"\nnightly wall seconds: {json.dumps(summary)}")
    return out


def _published(database: Path, table: str) -> pd.DataFrame:
    """The published partition of ``table`` read from its Parquet files under a database's folder (one run of DAY
    in each)."""
    [folder] = (database / table / f"run_date={DAY}").iterdir()
    df = pd.read_parquet(folder)
    return df.drop(columns=["model_version"], errors="ignore")  # the run that fitted it: the run ids differ


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.sort_values(keys).reset_index(drop=True)


def test_the_cluster_night_published_from_the_installed_wheel(nights):
    text = (nights["root"] / "cluster.log").read_text()
    assert nights["cluster_rc"] == 0, text[-4000:]
    assert "published" in text
    assert f"starting Spark (master {nights['url']} from spark-submit" in text
    # the defaults came from the installed wheel, not the source tree
    installed = str(nights["root"] / "env" / "lib" / "python3.11" / "site-packages" / "reelrank" / "conf" / "base.toml")
    assert installed in text


def test_the_cluster_ran_the_packed_environment_on_both_workers(nights):
    [events] = event_logs(nights["root"] / "on-cluster")
    env = environment(events)
    props, system = env["Spark Properties"], env["System Properties"]
    assert props["spark.master"] == nights["url"]
    assert props["spark.pyspark.python"] == "./env/bin/python"
    assert props["spark.reelrank.note"] == "two words"  # a value with a space reached Spark whole
    assert system["reelrank.a"] == "1" and system["reelrank.b"] == "x"  # ... and so did each java option
    hosts = {e["Executor ID"] for e in events if e["Event"] == "SparkListenerExecutorAdded"}
    assert len(hosts) >= WORKERS
    workers = sorted((nights["root"] / "cluster-procs").glob("worker-*"))
    unpacked = [p for w in workers for p in w.glob("app-*/*/env/bin/python")]
    assert len({p.parents[4] for p in unpacked}) == WORKERS, "every worker unpacked the environment"


@pytest.mark.parametrize("table,keys", [
    ("interactions", ["user_id", "item_id"]),
    ("user_index", ["user_id"]),
    ("item_index", ["item_id"]),
    ("rejected_interactions", None),
])
def test_ingest_and_indexes_are_identical(nights, table, keys):
    local, cluster = _published(nights["local"], table), _published(nights["on-cluster"], table)
    keys = keys or list(local.columns)
    pd.testing.assert_frame_equal(_sorted(local, keys), _sorted(cluster, keys))


@pytest.mark.parametrize("table", ["user_neighbours", "item_neighbours"])
def test_neighbours_are_identical(nights, table):
    keys = ["entity_id", "neighbour_id"]
    local = _sorted(_published(nights["local"], table), keys)
    cluster = _sorted(_published(nights["on-cluster"], table), keys)
    assert len(local) > 0
    pd.testing.assert_frame_equal(local[keys + ["support", "rank"]], cluster[keys + ["support", "rank"]])
    np.testing.assert_allclose(local["similarity"], cluster["similarity"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("table,key", [("user_factors", "user_idx"), ("item_factors", "item_idx")])
def test_als_factors_agree(nights, table, key):
    local = _sorted(_published(nights["local"], table), [key])
    cluster = _sorted(_published(nights["on-cluster"], table), [key])
    assert local[key].tolist() == cluster[key].tolist()
    np.testing.assert_allclose(np.stack(local["features"]), np.stack(cluster["features"]), rtol=0,
                               atol=FACTOR_TOLERANCE)


def test_published_lists_and_ndcg_agree(nights):
    local = _published(nights["local"], "recommendations")
    cluster = _published(nights["on-cluster"], "recommendations")
    lists = [df.sort_values(["user_id", "rank"]).groupby("user_id")["item_id"].apply(tuple) for df in (local, cluster)]
    same = (lists[0] == lists[1].reindex(lists[0].index)).mean()
    assert same >= SAME_LISTS_SHARE, f"only {same:.1%} of users got the same list"
    ndcg = [m.set_index(["model", "metric", "k"])["value"]
            for m in (_published(nights[d], "metrics") for d in ("local", "on-cluster"))]
    [published] = local["model"].unique()
    assert abs(ndcg[0][(published, "ndcg", 10.0)] - ndcg[1][(published, "ndcg", 10.0)]) <= NDCG_TOLERANCE
