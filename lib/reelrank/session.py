"""The one SparkSession factory: Hive catalog, warehouse and embedded metastore under the data dir."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from reelrank.config import Config

log = logging.getLogger(__name__)


class JavaMissingError(RuntimeError):
    """Spark needs a Java runtime (17) on PATH or in JAVA_HOME."""


def check_java() -> None:
    """Fail with one clear line when no Java 17 runtime can be found."""
    java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else shutil.which("java")
    if not java or not os.path.exists(java):
        raise JavaMissingError(
            "reelrank needs Java 17: install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)"
            " or set JAVA_HOME"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)', out)
    if m and int(m.group(1)) not in (8, 11, 17):
        raise JavaMissingError(f"reelrank needs Java 17 for Spark 3.5, found {m.group(1)} at {java}")


def spark_settings(cfg: Config) -> dict[str, str]:
    """Every Spark setting the session is built with (exposed for spark-submit and tests)."""
    data = cfg.data_dir
    s = {
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.ui.enabled": str(cfg.spark.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": cfg.spark.driver_memory,
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(data / "warehouse"),
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.local.dir": str(data / "tmp"),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={data}",
        "spark.hadoop.hive.exec.dynamic.partition.mode": "nonstrict",
    }
    if cfg.warehouse.metastore == "derby":
        s["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
            f"jdbc:derby:;databaseName={data / 'metastore_db'};create=true"
        )
    elif cfg.warehouse.metastore == "external":
        for k, v in cfg.warehouse.metastore_conf.items():
            key = k if k.startswith("spark.") else f"spark.hadoop.{k}"
            s[key] = os.path.expandvars(v)
    else:
        raise ValueError(f"warehouse.metastore must be 'derby' or 'external', got {cfg.warehouse.metastore!r}")
    s.update(cfg.spark.extra)
    return s


_SECRET = re.compile(r"password|secret|credential", re.IGNORECASE)
_HADOOP = "spark.hadoop."


def split_secrets(settings: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(public, secret)``: Hadoop settings named like a password are kept out of process command lines.

    pyspark and spark-submit pass every setting as ``--conf key=value``, which any user sees in ``ps``.
    The secret ones are set on the running SparkContext's Hadoop configuration instead (see build_spark).
    """
    secret = {k: v for k, v in settings.items() if k.startswith(_HADOOP) and _SECRET.search(k)}
    return {k: v for k, v in settings.items() if k not in secret}, secret


def build_spark(cfg: Config) -> SparkSession:
    """Build (or return the running) SparkSession for this config and make sure the database exists."""
    check_java()
    # Python workers must run the driver's interpreter (its venv has reelrank), not whatever python3 is on PATH
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    (cfg.data_dir / "tmp").mkdir(parents=True, exist_ok=True)
    public, secret = split_secrets(spark_settings(cfg))
    conf = SparkConf().setMaster(cfg.spark.master).setAppName(cfg.spark.app_name).setAll(list(public.items()))
    if secret and SparkContext._active_spark_context is None:
        # The JVM starts with the public settings only; the metastore client, created lazily on first catalog
        # use, copies this Hadoop configuration, secrets included.
        hadoop = SparkContext(conf=conf)._jsc.hadoopConfiguration()
        for k, v in secret.items():
            hadoop.set(k[len(_HADOOP):], v)
    else:
        conf.setAll(list(secret.items()))
    spark = SparkSession.builder.config(conf=conf).enableHiveSupport().getOrCreate()
    spark.sparkContext.setLogLevel(cfg.spark.log_level)
    spark.sparkContext.setCheckpointDir(str(cfg.data_dir / "checkpoints"))
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {cfg.warehouse.database}")
    log.debug("spark %s on %s, warehouse %s", spark.version, cfg.spark.master, cfg.data_dir / "warehouse")
    return spark
