"""The Petastorm boundary: every row exactly once per epoch, seeded shuffling, epochs, types, Spark's layout."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from reelrank.columns import ITEM_IDX, LABEL, USER_IDX
from reelrank.loader import ShardError, feature_moments, open_batches, shard_schema, shard_url, write_shards

ROWS = 1000
FEATURES = ["f_als_score", "f_item_pop", "f_user_mean"]


def tiny_frame(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """``user_idx`` is a unique row id, so rows can be counted after a pass."""
    rng = np.random.default_rng(seed)
    pdf = pd.DataFrame({
        USER_IDX: np.arange(rows, dtype=np.int32),
        ITEM_IDX: rng.integers(0, 50, rows).astype(np.int32),
        LABEL: (rng.random(rows) < 0.3).astype(np.float32),
    })
    for k, name in enumerate(FEATURES):
        pdf[name] = (rng.standard_normal(rows) * (k + 1) + 10 * k).astype(np.float32)
    return pdf


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    # 3 files of ~333 rows in row groups of 70: 15 row groups, several per file, uneven tails.
    return write_shards(tiny_frame(), tmp_path_factory.mktemp("shards") / "train", files=3, row_group_rows=70)


def read_ids(shard_dir, **kw) -> list[np.ndarray]:
    opts = {"batch_size": 64, "shuffle": False, "seed": 0, "workers": 1} | kw
    with open_batches(shard_dir, **opts) as batches:
        return [b[USER_IDX].numpy() for b in batches]


def test_layout_has_spark_side_files(shards):
    names = {p.name for p in Path(shards).iterdir()}
    assert "_SUCCESS" in names and any(n.endswith(".crc") for n in names)
    assert len([n for n in names if n.startswith("part-")]) == 3


@pytest.mark.parametrize("shuffle,workers", [(False, 1), (True, 1), (True, 3)])
def test_every_row_once_per_epoch(shards, shuffle, workers):
    torch.manual_seed(0)
    batches = read_ids(shards, shuffle=shuffle, workers=workers, shuffle_buffer=200)
    ids = np.concatenate(batches)
    assert len(ids) == ROWS
    assert np.array_equal(np.sort(ids), np.arange(ROWS))
    assert all(len(b) == 64 for b in batches[:-1]) and 0 < len(batches[-1]) <= 64


def test_unshuffled_single_worker_reads_in_file_order(shards):
    ids = np.concatenate(read_ids(shards, shuffle=False, workers=1))
    assert np.array_equal(ids, np.arange(ROWS))


def test_shuffle_is_seeded(shards):
    def order(seed: int) -> np.ndarray:
        torch.manual_seed(seed)  # the cross-row-group buffer draws from torch's global RNG
        return np.concatenate(read_ids(shards, shuffle=True, seed=seed, workers=1, shuffle_buffer=300))

    a, b, c = order(1), order(1), order(2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.array_equal(np.sort(a), np.sort(c))
    # Rows are shuffled inside row groups, not only row groups reordered.
    assert not np.array_equal(np.sort(a[:70]), a[:70])


def test_num_epochs(shards):
    ids = np.concatenate(read_ids(shards, shuffle=True, num_epochs=3))
    assert len(ids) == 3 * ROWS
    assert np.array_equal(np.bincount(ids, minlength=ROWS), np.full(ROWS, 3))


def test_endless_epochs_stop_cleanly_on_exit(shards):
    with open_batches(shards, 100, shuffle=True, seed=0, workers=2, num_epochs=None) as batches:
        got = sum(len(b[USER_IDX]) for b in itertools.islice(batches, 35))
    assert got == 3500  # more than three epochs' worth, then the reader threads are stopped and joined


def test_columns_and_types(shards):
    with open_batches(shards, 128, shuffle=False, seed=0, workers=1) as batches:
        first = next(iter(batches))
    assert set(first) == {USER_IDX, ITEM_IDX, LABEL, *FEATURES}
    assert first[USER_IDX].dtype == torch.int32 and first[ITEM_IDX].dtype == torch.int32
    assert all(first[c].dtype == torch.float32 for c in (LABEL, *FEATURES))
    expected = tiny_frame().iloc[:128]
    assert np.array_equal(first["f_item_pop"].numpy(), expected["f_item_pop"].to_numpy())

    with open_batches(shards, 128, shuffle=False, seed=0, workers=1, columns=[USER_IDX, "f_item_pop"]) as batches:
        assert set(next(iter(batches))) == {USER_IDX, "f_item_pop"}


def test_row_group_sharding_splits_rows_between_processes(shards):
    parts = [np.concatenate(read_ids(shards, shuffle=True, cur_shard=r, shard_count=2)) for r in range(2)]
    assert len(np.intersect1d(parts[0], parts[1])) == 0
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(ROWS))


def test_shard_schema(shards):
    features, rows = shard_schema(shards)
    assert features == FEATURES and rows == ROWS
    assert shard_schema(f"file:{shards}") == (FEATURES, ROWS)  # Spark writes file:/path


def test_shard_schema_names_the_bad_column(tmp_path):
    pdf = tiny_frame(10)
    write_shards(pdf.drop(columns=[LABEL]), tmp_path / "nolabel", files=1, row_group_rows=10)
    with pytest.raises(ShardError, match="'label'"):
        shard_schema(tmp_path / "nolabel")
    write_shards(pdf.astype({"f_item_pop": "float64"}), tmp_path / "f64", files=1, row_group_rows=10)
    with pytest.raises(ShardError, match="'f_item_pop'"):
        shard_schema(tmp_path / "f64")
    with pytest.raises(ShardError, match="not found"):
        shard_schema(tmp_path / "absent")


def test_feature_moments_match_numpy(shards):
    mean, std = feature_moments(shards, FEATURES)
    x = tiny_frame()[FEATURES].to_numpy(dtype=np.float64)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std, x.std(axis=0), rtol=1e-5)


def test_feature_moments_skip_non_finite_and_constant(tmp_path):
    x = np.array([1.0, np.nan, 3.0, np.inf], dtype=np.float32)
    table = pa.table({"f_x": x, "f_c": np.full(4, 2.0, dtype=np.float32)})
    (tmp_path / "s").mkdir()
    pq.write_table(table, tmp_path / "s" / "part-0.parquet")
    mean, std = feature_moments(tmp_path / "s", ["f_x", "f_c"])
    np.testing.assert_allclose(mean, [2.0, 2.0])
    np.testing.assert_allclose(std, [1.0, 1.0])  # std of {1, 3} is 1; a constant gets 1


def test_shard_url():
    assert shard_url("/a/b") == "file:///a/b"
    assert shard_url("file:/a/b") == "file:///a/b"
    assert shard_url("file:///a/b") == "file:///a/b"
    assert shard_url("hdfs://nn:8020/a") == "hdfs://nn:8020/a"
    assert shard_url("file:///a%20b") == "file:///a b"  # Petastorm takes the path as it is


def test_a_folder_with_a_space_reads(tmp_path):
    """pyarrow wants a percent-encoded URL and Petastorm a plain one: both read a data dir with a space."""
    shards = write_shards(tiny_frame(100), tmp_path / "a b" / "train", files=2, row_group_rows=30)
    assert shards == str(tmp_path / "a b" / "train")
    assert shard_schema(shards) == (FEATURES, 100)
    assert np.array_equal(np.sort(np.concatenate(read_ids(shards))), np.arange(100))


@pytest.mark.spark
def test_reads_shards_written_by_spark(spark, tmp_path):
    """Spark's own layout (_SUCCESS, .crc, snappy part files, file: paths) reads back intact."""
    pdf = tiny_frame(300)
    out = f"file:{tmp_path / 'spark_train'}"
    spark.createDataFrame(pdf).repartition(3).write.parquet(out)
    assert shard_schema(out) == (FEATURES, 300)
    with open_batches(out, 50, shuffle=True, seed=3, workers=2) as batches:
        got = pd.concat([pd.DataFrame({k: v.numpy() for k, v in b.items()}) for b in batches])
    got = got.sort_values(USER_IDX).reset_index(drop=True)[list(pdf.columns)]
    pd.testing.assert_frame_equal(got, pdf)
