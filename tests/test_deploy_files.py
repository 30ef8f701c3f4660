"""The schedules and the image in deploy/ agree with the repository: stages, job files, configs, pins, secrets.

Nothing in the package imports these files, so a renamed stage, a moved job or a dropped config would break
them silently. The Airflow DAG is loaded by Airflow itself (``DagBag``) and the Kubernetes manifest is parsed by
PyYAML, both in a venv of their own (``.venv-airflow``, made once by the first test that needs it): Airflow's
dependencies clash with the project's pinned stack, and PyYAML comes with it. The Dockerfile is read by a small
parser here (it is not built in the tests: that needs a Docker daemon and a registry).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import prebuild
import pytest

from reelrank.catalog import STAGE_NAMES
from reelrank.config import load_config

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
IMAGE_HOME = "/opt/reelrank"
"""Where the image (deploy/Dockerfile) puts jobs/ and conf/; the manifest's paths start with it."""

AIRFLOW_PINS = ("apache-airflow==2.11.2", "apache-airflow-providers-apache-spark==6.3.4")
"""The last Airflow 2 release, and the newest Spark provider that supports it (it needs pyspark-client, not
pyspark). About a minute to install from scratch on the development machine."""
AIRFLOW_VENV = Path(os.environ.get("REELRANK_AIRFLOW_VENV", REPO / ".venv-airflow"))
INSTALL_TIMEOUT_S = 20 * 60
NO_NETWORK = re.compile(r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|"
                        r"Max retries exceeded|ConnectTimeout|ProxyError|from versions: none")
"""What pip prints when it cannot reach the package index (``from versions: none``: it listed no release of a
package that PyPI has): the tests that need the venv are skipped, not failed."""
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN|CREDENTIAL", re.IGNORECASE)

CONN_ID_VARIABLE = "spark_reelrank_test"
"""Given to the DAG as the Airflow Variable reelrank_spark_conn_id, to see that Variables reach it."""

DAG_PROBE = """
import json, sys
from airflow.models.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
dag = bag.dags.get("reelrank_nightly")
facts = {"import_errors": {path: str(e) for path, e in bag.import_errors.items()}, "dag_ids": sorted(bag.dags)}
if dag is not None:
    facts |= {
        "schedule": dag.timetable.summary, "timezone": dag.timezone.name,
        "max_active_runs": dag.max_active_runs, "catchup": dag.catchup,
        "tasks": [
            {"task_id": t.task_id, "upstream": sorted(t.upstream_task_ids), "application": t.application,
             "application_args": t.application_args, "retries": t.retries, "depends_on_past": t.depends_on_past,
             "conn_id": t._conn_id, "archives": t._archives, "conf": t.conf}
            for t in dag.tasks
        ],
    }
with open(sys.argv[2], "w") as f:  # not stdout: Airflow logs there
    json.dump(facts, f)
"""

YAML_PROBE = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"


def nightly_cron() -> str:
    """The nightly's time as deploy/crontab has it: every schedule in deploy/ runs at that time."""
    entry = next(line for line in (DEPLOY / "crontab").read_text().splitlines() if line[:1].isdigit())
    return " ".join(entry.split()[:5])


def pinned(package: str) -> str:
    """The version spec pyproject.toml gives ``package`` (``==3.5.*``)."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d[len(package):] for d in deps if re.match(rf"{package}\s*[=<>~!]", d))


def in_repo(image_path: str) -> Path:
    """The repository file that the image has at ``image_path`` (local:///opt/reelrank/x or /opt/reelrank/x)."""
    path = image_path.removeprefix("local://")
    assert path.startswith(IMAGE_HOME + "/"), f"{image_path} is not under {IMAGE_HOME}"
    return REPO / path.removeprefix(IMAGE_HOME + "/")


def run(*command: str | Path, env: dict[str, str] | None = None) -> str:
    """``command``'s standard output; a failure shows the end of its output."""
    done = subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{command[:3]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


# --- the venv with Airflow and PyYAML ---------------------------------------------------------------------------


def install_airflow() -> subprocess.CompletedProcess | str | None:
    """Make the venv unless it exists with these pins (a marker file holds them): pip's outcome, the text of a
    timeout, or None when the venv was there already."""
    python, marker, pins = AIRFLOW_VENV / "bin" / "python", AIRFLOW_VENV / "reelrank-pins.txt", "\n".join(AIRFLOW_PINS)
    if python.exists() and marker.is_file() and marker.read_text() == pins:
        return None
    shutil.rmtree(AIRFLOW_VENV, ignore_errors=True)  # a half-made venv, or one with other pins
    subprocess.run([sys.executable, "-m", "venv", str(AIRFLOW_VENV)], check=True)
    try:
        pip = subprocess.run([str(python), "-m", "pip", "install", "-q", *AIRFLOW_PINS], capture_output=True,
                             text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"installing {' '.join(AIRFLOW_PINS)} into {AIRFLOW_VENV} took over {INSTALL_TIMEOUT_S} s"
    if pip.returncode == 0:
        marker.write_text(pins)
    return pip


@pytest.fixture(scope="session")
def airflow_python() -> Path:
    """The venv's python (made in the background since collection: tests/prebuild.py)."""
    outcome = prebuild.result("airflow", install_airflow)
    if isinstance(outcome, str):
        pytest.fail(outcome)
    if outcome is not None and outcome.returncode != 0:
        output = outcome.stdout + outcome.stderr
        if found := NO_NETWORK.search(output):
            pytest.skip(f"cannot install {' '.join(AIRFLOW_PINS)} into {AIRFLOW_VENV}: package index not reachable "
                        f"(pip: ...{found.group()})")
        pytest.fail(f"installing {' '.join(AIRFLOW_PINS)} into {AIRFLOW_VENV} failed:\n{output[-3000:]}")
    return AIRFLOW_VENV / "bin" / "python"


@pytest.fixture(scope="session")
def dag_facts(airflow_python, tmp_path_factory) -> dict:
    """What Airflow's DagBag makes of deploy/airflow/, in a fresh Airflow home with a migrated SQLite database.

    REELRANK_HOME points at this repository (the environment fallback, so job paths can be checked on disk) and
    the connection id comes as an Airflow Variable through AIRFLOW_VAR_*; the other settings take their defaults.
    """
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REELRANK_", "AIRFLOW"))}
    env |= {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "REELRANK_HOME": str(REPO),
            "AIRFLOW_VAR_REELRANK_SPARK_CONN_ID": CONN_ID_VARIABLE}
    run(airflow_python.parent / "airflow", "db", "migrate", env=env)  # the DAG reads Variables at parse time
    run(airflow_python, "-c", DAG_PROBE, DEPLOY / "airflow", home / "dag.json", env=env)
    return json.loads((home / "dag.json").read_text())


@pytest.fixture(scope="session")
def manifest(airflow_python) -> dict:
    """deploy/k8s/reelrank-nightly.yaml, parsed by PyYAML (in the Airflow venv: the project's has no PyYAML)."""
    return json.loads(run(airflow_python, "-c", YAML_PROBE, DEPLOY / "k8s" / "reelrank-nightly.yaml"))


# --- Airflow ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dag_loads_with_its_schedule(dag_facts):
    """One DAG, no import errors, daily at the nightly's time in UTC, one run at a time, no replay of missed days."""
    assert dag_facts["import_errors"] == {}
    assert dag_facts["dag_ids"] == ["reelrank_nightly"]
    assert (dag_facts["schedule"], dag_facts["timezone"]) == (nightly_cron(), "UTC")
    assert dag_facts["max_active_runs"] == 1
    assert dag_facts["catchup"] is False


@pytest.mark.slow
def test_dag_runs_the_stages_in_catalog_order(dag_facts):
    """The DAG's hard-coded stage list is reelrank.catalog.STAGE_NAMES, and each task waits for the one before."""
    tasks = dag_facts["tasks"]
    assert [t["task_id"] for t in tasks] == list(STAGE_NAMES)
    for previous, task in zip([None, *STAGE_NAMES[:-1]], tasks, strict=True):
        assert task["upstream"] == ([previous] if previous else []), task["task_id"]


@pytest.mark.slow
def test_dag_tasks_submit_the_stage_jobs(dag_facts):
    """Each task submits jobs/<stage>.py with a config and the run's date, retries, waits for yesterday's same
    stage, and ships the packed environment to the executors."""
    for task in dag_facts["tasks"]:
        stage, args = task["task_id"], task["application_args"]
        assert task["application"].endswith(f"jobs/{stage}.py") and (REPO / "jobs" / f"{stage}.py").is_file()
        assert task["application"] == f"{REPO}/jobs/{stage}.py", "REELRANK_HOME (environment) not applied"
        assert args[args.index("--date") + 1] == "{{ ds }}", args
        assert args[args.index("--config") + 1] == f"{REPO}/conf/cluster.toml", args
        assert task["retries"] >= 1 and task["depends_on_past"] is True, stage
        assert task["conn_id"] == CONN_ID_VARIABLE, "the Airflow Variable reelrank_spark_conn_id not applied"
        assert task["archives"].endswith("#env") and task["conf"]["spark.pyspark.python"] == "./env/bin/python"


# --- Kubernetes -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_k8s_manifest_schedules_the_nightly_job(manifest):
    """A ScheduledSparkApplication at the nightly's time that never overlaps, running jobs/nightly.py with a
    config of this repository that loads, on the Spark version pyproject.toml pins."""
    spec, app = manifest["spec"], manifest["spec"]["template"]
    assert (manifest["apiVersion"], manifest["kind"]) == ("sparkoperator.k8s.io/v1beta2", "ScheduledSparkApplication")
    assert (spec["schedule"], spec["concurrencyPolicy"]) == (nightly_cron(), "Forbid")
    assert (app["type"], app["mode"]) == ("Python", "cluster")
    assert in_repo(app["mainApplicationFile"]) == REPO / "jobs" / "nightly.py"
    assert (REPO / "jobs" / "nightly.py").is_file()
    config = in_repo(app["arguments"][app["arguments"].index("--config") + 1])
    assert config.parent == REPO / "conf" and config.suffix == ".toml" and config.is_file(), config
    load_config(config)  # raises ConfigError on a bad file; needs no Spark
    assert app["sparkVersion"].startswith(pinned("pyspark").lstrip("=").rstrip("*")), app["sparkVersion"]


@pytest.mark.slow
def test_k8s_manifest_takes_secrets_from_kubernetes_secrets(manifest):
    """Every environment variable named like a secret comes from a Kubernetes secret, never a literal value."""
    app = manifest["spec"]["template"]
    env = [e for role in ("driver", "executor") for e in app.get(role, {}).get("env", [])]
    secrets = [e for e in env if SECRET_NAME.search(e["name"])]
    assert secrets, "no secret reaches the job (REELRANK_METASTORE_PASSWORD expected)"
    for entry in secrets:
        assert "value" not in entry and entry["valueFrom"]["secretKeyRef"]["name"], entry


# --- Docker -----------------------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """deploy/Dockerfile as ``(INSTRUCTION, arguments)``: comments and blank lines dropped, ``\\`` lines joined."""
    instructions, pending = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        instructions.append((word.upper(), " ".join(rest.split())))
        pending = ""
    return instructions


def test_dockerfile_copies_files_that_exist():
    """Every COPY source exists in the repository, except dist/: `make package` builds the wheel there."""
    copies = [shlex.split(args) for word, args in dockerfile() if word == "COPY"]
    for args in copies:
        sources = [a for a in args if not a.startswith("--")][:-1]
        for source in sources:
            assert source.startswith("dist/") or list(REPO.glob(source.rstrip("/"))), f"COPY {source}: not in repo"
    destinations = {a[-2]: a[-1] for a in copies}
    assert destinations["jobs/"] == f"{IMAGE_HOME}/jobs/" and destinations["conf/"] == f"{IMAGE_HOME}/conf/"
