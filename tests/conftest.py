"""One SparkSession for the whole test run (local[2], few shuffle partitions, UI off)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reelrank.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("REELRANK_DATASETS", REPO.parent / "shared" / "datasets")).resolve()


def dataset(name: str) -> Path:
    """Path of a shared dataset, or skip the test with the reason."""
    path = DATASETS / name
    if not path.exists():
        pytest.skip(f"dataset {name} not found under {DATASETS} (set REELRANK_DATASETS)")
    return path


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(config, items) -> None:
    """Start the slow set-up of the selected tests that need it in the background (tests/prebuild.py): the packed
    environment of the cluster tests, the Airflow venv of the DAG test."""
    import prebuild

    fixtures = {name for item in items for name in getattr(item, "fixturenames", ())}
    if "nights" in fixtures and any(item.path.name == "test_cluster.py" for item in items):
        from clusterenv import build_packed_env

        prebuild.start("packed_env", build_packed_env)
    if "airflow_python" in fixtures:
        from test_deploy_files import install_airflow

        prebuild.start("airflow", install_airflow)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reelrank-data")


@pytest.fixture(scope="session")
def cfg(data_dir) -> Config:
    """The base config with a tiny synthetic catalogue and a per-test-run data dir."""
    return load_config(
        REPO / "conf" / "base.toml",
        overrides={
            "spark": {"shuffle_partitions": 2, "driver_memory": "2g"},
            "warehouse": {"data_dir": str(data_dir)},
            "synthetic": {"users": 200, "items": 150, "ratings": 6000},
            "train": {"epochs": 2, "batch_size": 512, "reader_workers": 1},
            "sequence": {"epochs": 2, "max_len": 20, "dim": 16, "eval_every": 1, "batch_size": 64,
                         "max_positions": 0},
            # ALS as small as the catalogue: each iteration is a few Spark jobs, whatever the data
            "als": {"rank": 8, "max_iter": 5},
        },
    )


@pytest.fixture(scope="session")
def spark(cfg):
    from reelrank.session import build_spark

    session = build_spark(cfg)
    yield session
    session.stop()


LOCAL_NIGHT_DAY = "2026-11-23"


@pytest.fixture(scope="session")
def local_night(spark, cfg, tmp_path_factory):
    """One in-process nightly of ``cfg`` (the tiny catalogue) in a data dir written as a ``file://`` URI and a
    database of its own: test_storage checks where it lands, test_cluster compares a cluster's night with it.
    Returns ``(ctx, data dir, database)``."""
    from datetime import date

    from reelrank import pipeline
    from reelrank.warehouse import storage

    data, db = tmp_path_factory.mktemp("local-night") / "data", "reelrank_uri"
    run_cfg = cfg.replace(warehouse={"data_dir": data.as_uri(), "database": db})
    # the shared session's warehouse is elsewhere: a database of its own puts this run's tables under data/
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {db} LOCATION '{storage.url(str(data / 'warehouse' / f'{db}.db'))}'")
    return pipeline.run_nightly(spark, run_cfg, date.fromisoformat(LOCAL_NIGHT_DAY)), data, db
