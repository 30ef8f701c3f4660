"""The one SparkSession factory: Hive catalog, warehouse and embedded metastore under the data dir."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from reelrank.config import Config
from reelrank.warehouse import runlock, storage

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
    """Every Spark setting the config asks for (exposed for spark-submit and tests); the master is separate
    (:func:`resolve_master`)."""
    data, local = cfg.data_dir, storage.local_state_dir(cfg.data_dir)
    s = {
        "spark.app.name": cfg.spark.app_name,
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.ui.enabled": str(cfg.spark.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": cfg.spark.driver_memory,
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": storage.join(data, "warehouse"),
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.local.dir": str(local / "tmp"),
        "spark.hadoop.hive.exec.dynamic.partition.mode": "nonstrict",
    }
    if cfg.spark.event_log:
        s["spark.eventLog.enabled"] = "true"
        s["spark.eventLog.dir"] = event_log_dir(cfg)
    java_opts = ""
    if cfg.warehouse.metastore == "derby":
        s["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
            f"jdbc:derby:;databaseName={local / runlock.METASTORE_DIR};create=true"
        )
        java_opts = f"-Dderby.system.home={local}"
    elif cfg.warehouse.metastore == "external":
        for k, v in cfg.warehouse.metastore_conf.items():
            key = k if k.startswith("spark.") else f"spark.hadoop.{k}"
            s[key] = os.path.expandvars(v)
    else:
        raise ValueError(f"warehouse.metastore must be 'derby' or 'external', got {cfg.warehouse.metastore!r}")
    s.update(cfg.spark.extra)
    extra_opts = cfg.spark.extra.get(_DRIVER_JAVA_OPTS, "")
    if java_opts or extra_opts:
        s[_DRIVER_JAVA_OPTS] = " ".join(o for o in (java_opts, extra_opts) if o)
    return s


LOG4J2_PROPERTIES = Path(__file__).with_name("log4j2.properties")


def quiet_spark_log(cfg: Config) -> str:
    """JVM options that give a driver Spark starts here the package's log4j2 file at ``[spark] log_level``
    from its first line (``setLogLevel`` comes only after start-up), unless the config names its own."""
    if "log4j2.configurationFile" in cfg.spark.extra.get(_DRIVER_JAVA_OPTS, ""):
        return ""
    return (f"-Dlog4j2.configurationFile={LOG4J2_PROPERTIES.as_uri()} "
            f"-Dreelrank.spark.log.level={cfg.spark.log_level.lower()}")


def event_log_dir(cfg: Config) -> str:
    """Where Spark's event log goes when ``[spark] event_log`` is on (``spark.history.fs.logDirectory``)."""
    return storage.join(cfg.data_dir, "spark-events")


_DRIVER_JAVA_OPTS = "spark.driver.extraJavaOptions"
_PYTHON = "spark.pyspark.python"
_DATA_DIR_SETTINGS = ("spark.sql.warehouse.dir", "spark.hadoop.javax.jdo.option.ConnectionURL", "spark.eventLog.dir")
"""Settings that follow the job's data dir even under spark-submit: another value would split one night's
tables, metastore and history between two places."""


def submitted_settings() -> dict[str, str] | None:
    """The settings spark-submit launched this driver with (``--master``, ``--conf``, ``--driver-memory``...),
    or None when this process was not started by spark-submit (a plain ``reelrank nightly``)."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # set by spark-submit's PythonRunner for the driver it starts
        return None
    SparkContext._ensure_initialized()  # connects to spark-submit's JVM, whose system properties hold its settings
    return dict(SparkConf(loadDefaults=True).getAll())


def resolve_master(cfg: Config, submitted: dict[str, str] | None) -> tuple[str, str]:
    """``(master, where it came from)``: spark-submit's ``--master`` wins, then ``$SPARK_MASTER``, then the
    config's ``[spark] master`` (the default for runs outside spark-submit)."""
    if submitted and submitted.get("spark.master"):
        return submitted["spark.master"], "spark-submit"
    if os.environ.get("SPARK_MASTER"):
        return os.environ["SPARK_MASTER"], "$SPARK_MASTER"
    return cfg.spark.master, "config [spark] master"


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
    """Build (or return the running) SparkSession for this config and make sure the database exists.

    Under spark-submit, what it was given (master, memory, ``--conf``) wins over the config, which only fills
    in what is missing: a scheduler's command line is the last word on resources.
    """
    check_java()
    (storage.local_state_dir(cfg.data_dir) / "tmp").mkdir(parents=True, exist_ok=True)
    submitted = submitted_settings()
    master, origin = resolve_master(cfg, submitted)
    public, secret = split_secrets(spark_settings(cfg))
    if not (submitted or {}).get(_PYTHON, public.get(_PYTHON)):
        # Python workers must run the driver's interpreter (its venv has reelrank), not whatever python3 is on
        # PATH; a packed environment for executors comes as spark.pyspark.python instead (deploy/submit.sh),
        # which this variable would override
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if submitted is None:
        conf = SparkConf(loadDefaults=False).setMaster(master).setAll(list(public.items()))
        conf.set(_DRIVER_JAVA_OPTS, " ".join(filter(None, [quiet_spark_log(cfg), conf.get(_DRIVER_JAVA_OPTS)])))
    else:
        conf = SparkConf(loadDefaults=False).setAll(list(submitted.items()))
        for k, v in public.items():
            if k in _DATA_DIR_SETTINGS and conf.get(k) not in (None, v):
                log.warning("spark-submit's %s=%s replaced by %s (the data dir's; pass --data-dir to the job)",
                            k, conf.get(k), v)
                conf.set(k, v)
            else:
                conf.setIfMissing(k, v)
    if cfg.spark.event_log and conf.get("spark.eventLog.dir"):
        storage.makedirs(str(conf.get("spark.eventLog.dir")))  # Spark does not create it
    log.info("starting Spark (master %s from %s, driver memory %s)", master, origin, conf.get("spark.driver.memory"))
    started = time.monotonic()
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
    spark.sparkContext.setCheckpointDir(storage.join(cfg.data_dir, "checkpoints"))
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {cfg.warehouse.database}")
    log.info("Spark %s ready in %.0f s: %s", spark.version, time.monotonic() - started, resources(spark))
    return spark


def resources(spark: SparkSession) -> str:
    """What the session runs on, for the run log: master, parallelism, memory, executors."""
    sc = spark.sparkContext
    conf = sc.getConf()
    parts = [f"master {sc.master}", f"default parallelism {sc.defaultParallelism}",
             f"driver memory {conf.get('spark.driver.memory', '1g')}"]
    if not (sc.master or "").startswith("local"):
        executors = sc._jsc.sc().getExecutorMemoryStatus().size() - 1  # the driver's block manager is one of them
        parts += [f"{executors} executors registered", f"executor memory {conf.get('spark.executor.memory', '1g')}",
                  f"executor cores {conf.get('spark.executor.cores', 'all')}",
                  f"executor python {conf.get('spark.pyspark.python', os.environ.get('PYSPARK_PYTHON', 'python3'))}"]
    parts.append(f"warehouse {conf.get('spark.sql.warehouse.dir')}")
    return ", ".join(parts)
