"""Locations under the data dir: local paths and URIs alike, never through pathlib (issue 12)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank import report
from reelrank.runs import RunRecord
from reelrank.runstate import RunContext
from reelrank.warehouse import publishing, sqlserver, storage
from reelrank.warehouse.storage import StorageError

HDFS = "hdfs://nn:8020/x"


def test_local_paths_are_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SUB", "v")
    assert storage.resolve("rel/data") == str(tmp_path / "rel" / "data")
    assert storage.resolve("~/data/") == str(tmp_path / "home" / "data")
    assert storage.resolve("$SUB/data") == str(tmp_path / "v" / "data")
    assert storage.is_local(str(tmp_path)) and storage.local_path(str(tmp_path)) == tmp_path


def test_file_uris_become_local_paths(tmp_path):
    folder = tmp_path / "a b"
    uri = folder.as_uri()
    assert "%20" in uri
    assert storage.resolve(uri) == str(folder)
    assert storage.resolve(f"file:{folder}") == str(folder)  # Spark's file:/path
    assert storage.is_local(uri) and storage.local_path(uri) == folder
    assert storage.url(str(folder)) == uri
    storage.write_text(storage.join(uri, "state.json"), "{}")
    assert (folder / "state.json").read_text() == "{}"
    assert storage.read_text(str(folder / "state.json")) == "{}"
    assert storage.listdir(uri) == ["state.json"]


def test_remote_uris_are_kept_as_written():
    assert storage.join(HDFS, "runs") == "hdfs://nn:8020/x/runs"
    assert storage.join(HDFS + "/", "runs", "r1", "state.json") == "hdfs://nn:8020/x/runs/r1/state.json"
    assert str(Path(HDFS) / "runs") == "hdfs:/nn:8020/x/runs"  # why locations are strings
    assert storage.resolve(HDFS + "/") == HDFS
    assert storage.resolve("s3a://bucket/data") == "s3a://bucket/data"
    assert storage.url(HDFS) == HDFS
    assert not storage.is_local(HDFS) and storage.local_path(HDFS) is None
    assert storage.name(HDFS + "/runs/") == "runs" and storage.parent(HDFS + "/runs") == HDFS


def test_an_unsupported_scheme_names_the_location():
    with pytest.raises(StorageError, match="ftp://host/data"):
        storage.resolve("ftp://host/data")


def test_write_is_whole_and_leaves_no_temporary_file(tmp_path):
    target = storage.join(str(tmp_path), "runs", "current-2026-11-23")
    storage.write_bytes(target, b"first")
    storage.write_bytes(target, b"second")
    assert storage.read_bytes(target) == b"second"
    assert storage.listdir(storage.parent(target)) == ["current-2026-11-23"]


def test_missing_locations(tmp_path):
    missing = storage.join(str(tmp_path), "nothing", "here")
    assert not storage.exists(missing) and not storage.isdir(missing)
    assert storage.listdir(missing) == []
    storage.remove(missing)


def test_listdir_remove_and_mtime(tmp_path):
    root = str(tmp_path)
    storage.write_text(storage.join(root, "frames", "a", "_DONE"), "x")
    storage.makedirs(storage.join(root, "frames", "b"))
    storage.write_text(storage.join(root, "frames", "_SUCCESS"), "")
    frames = storage.join(root, "frames")
    assert storage.listdir(frames) == ["_SUCCESS", "a", "b"]
    assert storage.listdir(frames, dirs_only=True) == ["a", "b"]
    assert storage.isdir(storage.join(frames, "a")) and not storage.isdir(storage.join(frames, "_SUCCESS"))
    done = storage.join(frames, "a", "_DONE")
    assert storage.mtime(done) == pytest.approx(Path(done).stat().st_mtime)
    storage.remove(storage.join(frames, "a"))
    assert storage.listdir(frames, dirs_only=True) == ["b"]


def test_run_locations_on_a_remote_data_dir_stay_uris(cfg, monkeypatch, tmp_path):
    """Every path the nightly derives from an hdfs data dir keeps its scheme; local process state goes elsewhere."""
    monkeypatch.setenv("REELRANK_LOCAL_DIR", str(tmp_path))
    remote = cfg.replace(warehouse={"data_dir": HDFS})
    assert remote.data_dir == HDFS
    ctx = RunContext(None, remote, RunRecord(run_date=date(2026, 12, 1), config_hash="h", source="synthetic"))
    run = f"{HDFS}/runs/{ctx.record.run_id}"
    assert ctx.work == run
    assert ctx.location("shards_train") == f"{run}/shards/train"
    assert ctx.location("model") == f"{run}/model"
    assert ctx.location("candidates_full") == f"{run}/frames/candidates_full"
    assert report.report_dir(remote.data_dir, date(2026, 12, 1), "r1") == f"{HDFS}/reports/2026-12-01/r1"
    assert all(p.is_relative_to(tmp_path) for p in sqlserver.run_paths(remote, 10010))


@pytest.mark.spark
@pytest.mark.slow
def test_a_nightly_with_a_file_uri_data_dir_publishes_under_it(spark, cfg, local_night):
    """``data_dir`` written as a ``file://`` URI: the run's state, model, report and tables all land under it."""
    ctx, data, db = local_night
    day = ctx.record.run_date
    assert ctx.cfg.data_dir == str(data)  # given as data.as_uri() (conftest's local_night)

    runs = spark.table(f"{db}.runs").filter(F.col("run_id") == ctx.record.run_id).collect()
    assert sorted(r.status for r in runs) == ["published", "started"]
    recs = spark.table(f"{db}.recommendations").filter(F.col(C.RUN_DATE) == F.lit(day))
    assert recs.count() > 0
    location = publishing.partition_location(spark, db, "recommendations", day)
    assert location is not None and storage.resolve(location).startswith(f"{data}/warehouse/")
    pointer = data / "runs" / f"current-{day}"
    assert pointer.read_text() == ctx.record.run_id
    assert json.loads((data / "runs" / ctx.record.run_id / "state.json").read_text())["published"]
    assert (data / "runs" / ctx.record.run_id / "model" / f"{cfg.train.model}.pt").is_file()
    assert ctx.report == str(data / "reports" / str(day) / ctx.record.run_id / "report.html")
    assert Path(ctx.report).is_file()
