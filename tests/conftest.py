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
        },
    )


@pytest.fixture(scope="session")
def spark(cfg):
    from reelrank.session import build_spark

    session = build_spark(cfg)
    yield session
    session.stop()
