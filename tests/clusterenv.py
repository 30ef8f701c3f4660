"""What the submit and cluster tests share: a small config, the packed environment, Spark's event log."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import prebuild

REPO = Path(__file__).resolve().parents[1]
DIST = REPO / "dist"
ENV_TARBALL = DIST / "reelrank-env.tar.gz"
SOURCES = [REPO / "pyproject.toml", *(REPO / "lib" / "reelrank").glob("*.py"), *(REPO / "jobs").glob("*.py"),
           *(REPO / "conf").glob("*.toml")]

SMALL_TOML = """# the test suite's tiny night (tests/conftest.py), alone in its folder: it extends the installed base
[spark]
shuffle_partitions = 2
driver_memory = "1g"
event_log = true
extra = {{ "spark.reelrank.note" = "two words", "spark.driver.extraJavaOptions" = "-Dreelrank.a=1 -Dreelrank.b=x" }}

[synthetic]
users = 200
items = 150
ratings = 6000

[train]
epochs = 2
batch_size = 512
reader_workers = 1

[sequence]
epochs = 2
max_len = 20
dim = 16
eval_every = 1
batch_size = 64
max_positions = 0

[als]
rank = 8
max_iter = 5

[warehouse]
data_dir = "{data_dir}"
"""


def write_small_config(folder: Path, data_dir: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "small.toml"
    path.write_text(SMALL_TOML.format(data_dir=data_dir))
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would let a child import reelrank from the source tree."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV", "SPARK_HOME",
                        "REELRANK_DATA_DIR", "REELRANK_CONF_DIR", "SPARK_MASTER")}
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    env.update(extra)
    return env


def build_packed_env() -> Path:
    """``dist/reelrank-env.tar.gz`` from ``make package``'s script; rebuilt when a source file is newer than it."""
    if not ENV_TARBALL.exists() or ENV_TARBALL.stat().st_mtime < max(p.stat().st_mtime for p in SOURCES):
        subprocess.run(["bash", str(REPO / "deploy" / "build.sh"), str(DIST)], check=True, cwd=REPO,
                       env={**os.environ, "RR_VENV": str(REPO / ".venv")}, stdout=subprocess.DEVNULL)
    return ENV_TARBALL


def packed_env() -> Path:
    """The tarball of :func:`build_packed_env`, built in the background since collection (conftest) when the
    cluster tests were selected."""
    return prebuild.result("packed_env", build_packed_env)


def unpack(tarball: Path, target: Path) -> Path:
    """The packed environment unpacked at ``target``: a non-editable install, outside the source tree."""
    with tarfile.open(tarball) as tar:
        tar.extractall(target, filter="tar")
    return target


def run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float) -> tuple[int, float]:
    """Run ``cmd`` with its output in ``log``; ``(exit status, seconds)``."""
    started = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
    return rc, time.monotonic() - started


def event_logs(data_dir: Path) -> list[list[dict]]:
    """Every application's Spark event log under ``data_dir/spark-events``, as lists of events."""
    return [[json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            for p in sorted((data_dir / "spark-events").iterdir()) if not p.name.endswith(".inprogress")]


def environment(events: list[dict]) -> dict[str, dict[str, str]]:
    """An event log's environment: ``{"Spark Properties": {...}, "System Properties": {...}, ...}``."""
    update = next(e for e in events if e["Event"] == "SparkListenerEnvironmentUpdate")
    return {k: dict(v) if isinstance(v, list) else v for k, v in update.items() if k != "Event"}
