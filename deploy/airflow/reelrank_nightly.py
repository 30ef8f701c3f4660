"""Airflow 2 DAG ``reelrank_nightly``: the nightly pipeline at 02:30 UTC, one ``spark-submit`` task per stage.

What: ``ingest -> matrix -> neighbours -> candidates -> features -> train -> evaluate -> score -> publish``, each a
``SparkSubmitOperator`` running ``jobs/<stage>.py --config <config> --date {{ ds }}``. ``ingest`` starts the
date's run; every later stage continues that run (``reelrank stage --help``), so a failed stage is retried or
cleared on its own without redoing the stages before it. ``deploy/crontab`` runs the same pipeline as one job
(``jobs/nightly.py``); this DAG is for a site that wants per-stage retries, logs and timings in Airflow.

Why these settings:
- ``max_active_runs=1`` and ``catchup=False``: two nights never run at once (they share the published tables),
  and a scheduler that was down does not replay every missed night.
- ``depends_on_past=True``: a stage runs for a date only after the same stage succeeded for the date before, so
  one date's ``publish`` always precedes the next date's. It orders each stage across dates, not whole runs:
  after a failed night, the next night runs the stages that succeeded the night before and then stops (Airflow
  fails it as deadlocked) until the failed night is cleared and finishes; then clear the next night as well.
- The executors' Python is the packed environment that ``make package`` builds (``dist/reelrank-env.tar.gz``,
  used as ``deploy/submit.sh`` uses it), shipped with ``--archives <tarball>#env``. The driver runs where
  ``spark-submit`` runs (client mode: the Airflow worker) and uses reelrank's own venv there, not Airflow's,
  whose dependencies clash with reelrank's pinned stack.
- The Spark master, deploy mode and ``spark-submit`` binary come from the Airflow connection (``conn_id``).
  Settings that must precede the driver's JVM (driver memory) go in that connection's extras or ``conf`` below:
  ``reelrank spark-conf --config CONFIG`` prints what a config asks for.

Settings: each is an Airflow Variable, else an environment variable of the DAG processor, else a default, read
when the file is parsed:

| Variable | environment variable | default |
| --- | --- | --- |
| reelrank_home | REELRANK_HOME | /opt/reelrank (holds jobs/ and conf/) |
| reelrank_config | REELRANK_CONFIG | {home}/conf/cluster.toml |
| reelrank_env_archive | REELRANK_ENV_ARCHIVE | {home}/dist/reelrank-env.tar.gz (`make package`) |
| reelrank_driver_python | REELRANK_DRIVER_PYTHON | {home}/.venv/bin/python |
| reelrank_spark_conn_id | REELRANK_SPARK_CONN_ID | spark_default |
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow import DAG
from airflow.models import Variable
from airflow.models.baseoperator import chain
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

# Must equal reelrank.catalog.STAGE_NAMES (tests/test_deploy_files.py checks it): evaluate picks tonight's list
# (champion), which score reads. Hard-coded because the DAG processor's Python is Airflow's, without reelrank.
STAGES = ("ingest", "matrix", "neighbours", "candidates", "features", "train", "evaluate", "score", "publish")


def setting(name: str, default: str) -> str:
    """The Airflow Variable ``reelrank_<name>``, else ``$REELRANK_<NAME>``, else ``default``."""
    return Variable.get(f"reelrank_{name}", default_var=os.environ.get(f"REELRANK_{name.upper()}", default))


HOME = setting("home", "/opt/reelrank")
CONFIG = setting("config", f"{HOME}/conf/cluster.toml")
ENV_ARCHIVE = setting("env_archive", f"{HOME}/dist/reelrank-env.tar.gz")
DRIVER_PYTHON = setting("driver_python", f"{HOME}/.venv/bin/python")
CONN_ID = setting("spark_conn_id", "spark_default")

with DAG(
    dag_id="reelrank_nightly",
    description="reelrank nightly recommendations, one spark-submit per stage",
    doc_md=__doc__,
    schedule="30 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"depends_on_past": True, "retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["reelrank", "spark"],
) as dag:
    chain(
        *(
            SparkSubmitOperator(
                task_id=stage,
                name=f"reelrank-{stage}",
                conn_id=CONN_ID,
                application=f"{HOME}/jobs/{stage}.py",
                application_args=["--config", CONFIG, "--date", "{{ ds }}"],
                archives=f"{ENV_ARCHIVE}#env",  # unpacked as ./env in each executor's working directory
                conf={"spark.pyspark.python": "./env/bin/python", "spark.pyspark.driver.python": DRIVER_PYTHON},
            )
            for stage in STAGES
        )
    )
