"""One line, never a traceback, for what a user can cause: a busy or unusable data dir, a corrupt model, checkpoint,
shard or published Parquet file, a run out of memory (issue 13). Real files and processes throughout."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from reelrank import errors, models
from reelrank.cli.bootstrap import DataDirError, check_data_dir, one_line
from reelrank.columns import ITEM_IDX, LABEL, USER_IDX
from reelrank.errors import CorruptFile
from reelrank.loader import check_shards, shard_schema, write_shards
from reelrank.seqmodels import SequenceModel, pad_left
from reelrank.train import train
from reelrank.warehouse import runlock

REPO = Path(__file__).resolve().parents[1]
FAST_EXIT_S = 15.0
"""A refused command starts no JVM: it answers in well under a second; this allows for a loaded machine."""


def _reelrank(*args: str, timeout: float = 120.0) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "reelrank.cli", *args], capture_output=True, text=True,
                       timeout=timeout, cwd=REPO)
    return r, time.monotonic() - started


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("reelrank: "), stderr[-3000:]
    assert "Traceback" not in stderr
    return lines[0]


# -- the run lock --------------------------------------------------------------------------------------------


def test_a_second_nightly_stops_at_once_naming_the_first(tmp_path):
    data = str(tmp_path / "data")
    with runlock.hold(data, date(2026, 12, 2), "reelrank nightly --date 2026-12-02"):
        r, seconds = _reelrank("nightly", "--data-dir", data, "--date", "2026-12-03")
        line = _one_line(r.stderr)
        assert r.returncode == 2 and seconds < FAST_EXIT_S
        assert f"{data} is in use by pid {os.getpid()} (reelrank nightly --date 2026-12-02, started " in line
        assert line.endswith("; wait for it to finish or use another --data-dir")
        assert not (tmp_path / "data" / "metastore_db").exists()  # it stopped before Spark started

        stage, _ = _reelrank("stage", "score", "--data-dir", data, "--date", "2026-12-02")
        assert stage.returncode == 2 and f"pid {os.getpid()}" in _one_line(stage.stderr)
        # with the embedded metastore, a Spark query cannot run beside the night either: it says why and what to do
        q, _ = _reelrank("query", "--spark", "--data-dir", data, "SELECT 1")
        line = _one_line(q.stderr)
        assert q.returncode == 2 and f"the embedded metastore under {data} is in use by pid {os.getpid()}" in line
        assert "external metastore (conf/postgres.toml)" in line
        assert runlock.holder(data) is not None
    assert runlock.holder(data) is None
    with runlock.hold(data):  # free again
        pass


def test_the_lock_dies_with_a_killed_process(tmp_path):
    data = str(tmp_path / "data")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from reelrank.warehouse import runlock\n"
         f"with runlock.hold({data!r}, command='reelrank nightly'):\n    print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        seen = runlock.holder(data)
        assert seen is not None and seen.pid == holder.pid and seen.command == "reelrank nightly"
        with pytest.raises(runlock.DataDirBusy, match=f"pid {holder.pid}"):
            with runlock.hold(data):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert runlock.holder(data) is None  # no stale lock after SIGKILL
    with runlock.hold(data):
        pass


# -- unusable data directories -------------------------------------------------------------------------------


def test_unusable_data_dirs_are_one_line(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = {str(a_file / "data"): "Not a directory", str(a_file): "Not a directory",
             "/proc/reelrank-test/data": "No such file or directory"}
    for data, reason in cases.items():
        r, seconds = _reelrank("query", "--spark", "--data-dir", data, "SELECT 1")
        line = _one_line(r.stderr)
        assert r.returncode == 2 and seconds < FAST_EXIT_S
        assert line.startswith(f"reelrank: cannot use data directory {data}: {reason}"), line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_data_dir_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(DataDirError, match=f"cannot use data directory {ro}: Permission denied"):
            check_data_dir(str(ro))
    finally:
        ro.chmod(0o755)


def test_a_usable_data_dir_passes_and_is_created(tmp_path):
    check_data_dir(str(tmp_path / "new" / "data"))
    assert (tmp_path / "new" / "data").is_dir() and not any((tmp_path / "new" / "data").iterdir())


# -- models, checkpoints, shards -----------------------------------------------------------------------------

N_USERS, N_ITEMS = 30, 20


def _frame(rows: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({USER_IDX: rng.integers(0, N_USERS, rows).astype(np.int32),
                         ITEM_IDX: rng.integers(0, N_ITEMS, rows).astype(np.int32),
                         LABEL: rng.integers(0, 2, rows).astype(np.float32),
                         "f_x": rng.standard_normal(rows).astype(np.float32)})


def _tcfg(cfg, **over):
    base = {"model": "mlp", "epochs": 1, "batch_size": 128, "hidden": [8], "embedding_dim": 4, "reader_workers": 1,
            "shuffle_buffer": 0, "device": "cpu", "early_stopping_patience": 0, "num_processes": 1}
    return cfg.replace(train=base | over).train


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, cfg) -> Path:
    """A real trained model file (and the shards it came from)."""
    root = tmp_path_factory.mktemp("model")
    shards = write_shards(_frame(), root / "train", files=2, row_group_rows=200)
    result = train(shards, None, _tcfg(cfg), root / "mlp.pt", N_USERS, N_ITEMS)
    return Path(result.model_path)


def _assert_names(e: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    text = str(e.value)
    assert "\n" not in text and str(path) in text and e.value.path == str(path), text
    assert "weights_only` argument" not in text and "Re-running" not in text  # not PyTorch's advice
    for w in words:
        assert w in text, text


def test_truncated_and_junk_model_files_name_the_file(model_file, tmp_path):
    assert models.load(model_file).n_users == N_USERS
    data = model_file.read_bytes()
    for name, content in {"half": data[: len(data) // 2], "tail-cut": data[:-468], "head": data[:20],
                          "empty": b"", "junk": b"this is not a model " * 50}.items():
        bad = tmp_path / f"{name}.pt"
        bad.write_bytes(content)
        with pytest.raises(CorruptFile) as e:
            models.load(bad)
        _assert_names(e, bad, "model file", "truncated or corrupt", "rerun the train stage")


class _Payload:
    """Pickles to a call of ``os.system``: what a planted model file would run under ``weights_only=False``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_model_file_carrying_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    planted = tmp_path / "planted.pt"
    buf = io.BytesIO()
    torch.save({"format": models.FORMAT_VERSION, "model": "mlp", "x": _Payload(marker)}, buf)
    planted.write_bytes(buf.getvalue())
    with pytest.raises(CorruptFile) as e:
        models.load(planted)
    _assert_names(e, planted, "objects other than tensors", "refused", "system")
    assert not marker.exists()
    buf = io.BytesIO()
    torch.save([torch.zeros(2)], buf)  # loads under weights_only, but is no model
    (tmp_path / "list.pt").write_bytes(buf.getvalue())
    with pytest.raises(CorruptFile) as e:
        models.load(tmp_path / "list.pt")
    _assert_names(e, tmp_path / "list.pt", "not a reelrank model")


def test_a_corrupt_train_checkpoint_names_the_file(cfg, model_file, tmp_path):
    shards = str(model_file.parent / "train")
    c = _tcfg(cfg, epochs=2, resume=True)
    ckpt = tmp_path / "mlp.pt.ckpt"
    models.make_ranker(dataclasses.replace(c, epochs=1), N_USERS, N_ITEMS).fit(shards, None, c, checkpoint_path=ckpt)
    assert models.load_checkpoint(str(ckpt), "cpu") is not None
    ckpt.write_bytes(ckpt.read_bytes()[:-100])
    with pytest.raises(CorruptFile) as e:
        models.make_ranker(c, N_USERS, N_ITEMS).fit(shards, None, c, checkpoint_path=ckpt)
    _assert_names(e, ckpt, "checkpoint", "truncated or corrupt", "delete it")


def test_a_corrupt_sequence_checkpoint_and_model_name_the_file(cfg, tmp_path):
    seqs = pad_left([np.arange(1, 10) % N_ITEMS + 1 for _ in range(8)], 10)
    scfg = dataclasses.replace(cfg.sequence, max_len=9, dim=8, epochs=1, batch_size=4, eval_every=1)
    ckpt = tmp_path / "sasrec.ckpt"
    model = SequenceModel("sasrec", N_ITEMS, scfg)
    model.fit(seqs, torch.device("cpu"), checkpoint_path=ckpt)
    ckpt.write_bytes(b"\0" * 64)
    with pytest.raises(CorruptFile) as e:
        SequenceModel("sasrec", N_ITEMS, scfg).fit(seqs, torch.device("cpu"), checkpoint_path=ckpt)
    _assert_names(e, ckpt, "checkpoint", "truncated or corrupt")
    data = model.to_bytes()
    with pytest.raises(CorruptFile, match="sequence model x.pt is truncated or corrupt"):
        SequenceModel.from_bytes(data[: len(data) // 3], "x.pt")


def test_a_corrupt_shard_names_the_file(cfg, tmp_path):
    for victim in (0, 1):  # the first file is also the one the schema is read from
        shards = write_shards(_frame(), tmp_path / f"s{victim}", files=2, row_group_rows=200)
        bad = sorted(Path(shards).glob("part-*.parquet"))[victim]
        bad.write_bytes(bad.read_bytes()[:-30])  # truncated: the footer is gone
        for check in (check_shards, shard_schema):
            with pytest.raises(CorruptFile) as e:
                check(shards)
            _assert_names(e, bad, "shard file", "truncated or corrupt")
        with pytest.raises(CorruptFile, match=str(bad)):
            train(shards, None, _tcfg(cfg), tmp_path / f"m{victim}.pt", N_USERS, N_ITEMS)
        assert not (tmp_path / f"m{victim}.pt").exists()


# -- Spark failures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corrupt_table(spark, tmp_path_factory):
    """A published-like partitioned Parquet table in its own database, one of its data files overwritten."""
    spark.sql("CREATE DATABASE IF NOT EXISTS errors_test")
    spark.sql("DROP TABLE IF EXISTS errors_test.t")
    spark.range(40).selectExpr("id", "CAST(id % 2 AS INT) AS p").repartition(2).write.partitionBy("p") \
        .format("parquet").saveAsTable("errors_test.t")
    location = spark.sql("DESCRIBE FORMATTED errors_test.t").where("col_name = 'Location'").first()["data_type"]
    part = Path(location.removeprefix("file:")) / "p=1"
    bad = sorted(part.glob("part-*.parquet"))[0]
    bad.write_bytes(b"junk" * 64)
    for crc in part.glob(".*.crc"):
        crc.unlink()
    yield bad
    spark.sql("DROP TABLE IF EXISTS errors_test.t")
    spark.sql("DROP DATABASE IF EXISTS errors_test")


@pytest.mark.spark
def test_a_corrupt_parquet_file_is_named(spark, corrupt_table):
    from py4j.protocol import Py4JJavaError

    for run in (lambda: spark.sql("SELECT * FROM errors_test.t").collect(),
                lambda: spark.sql("SELECT sum(id) FROM errors_test.t WHERE p = 1").toPandas()):
        with pytest.raises(Py4JJavaError) as e:
            run()
        assert "An error occurred while calling" in str(e.value)  # what the CLI printed before
        named = errors.unreadable_parquet(e.value)
        assert named is not None and named.path == str(corrupt_table)
        assert str(named).startswith(f"cannot read {corrupt_table}: not a Parquet file"), str(named)
        assert "\n" not in str(named)
    assert spark.sql("SELECT count(*) FROM errors_test.t WHERE p = 0").first()[0] == 20  # the session lives on


@pytest.mark.spark
def test_a_java_failure_is_its_root_cause_in_one_line(spark, cfg, corrupt_table):
    from py4j.protocol import Py4JJavaError

    with pytest.raises(Py4JJavaError) as e:
        spark.sql("SELECT * FROM errors_test.t").collect()
    line = one_line(e.value, cfg, "score")
    assert line.startswith("score failed: RuntimeException: file:") and "is not a Parquet file" in line
    assert line.endswith("the full trace is in the log with -v / --verbose") and "\n" not in line
    wrapped = RuntimeError(f"run r1 failed in score: {e.value} (nothing published; previous output unchanged)")
    wrapped.__cause__ = e.value
    line = one_line(wrapped, cfg)
    assert line.startswith("run r1 failed in score: RuntimeException: ") and line.endswith("output unchanged)")


@pytest.mark.spark
def test_out_of_memory_names_the_setting(spark, cfg):
    from py4j.protocol import Py4JJavaError

    jvm = spark.sparkContext._jvm
    assert jvm is not None
    with pytest.raises(Py4JJavaError) as e:  # a real OutOfMemoryError that allocates nothing
        jvm.java.lang.reflect.Array.newInstance(jvm.java.lang.Byte.TYPE, 2**31 - 1)
    line = one_line(e.value, cfg, "train")
    assert line.startswith("train failed: OutOfMemoryError: Requested array size exceeds VM limit"), line
    assert f"out of memory: raise [spark] driver_memory (now {cfg.spark.driver_memory}) in the config" in line
    on_cluster = dataclasses.replace(cfg.spark, master="spark://host:7077")
    assert "spark.executor.memory (now 1g, Spark's default) under [spark] extra" in errors.memory_advice(on_cluster)

    with pytest.raises(Py4JJavaError) as e:  # a Python worker out of memory (asks for 1 EiB, gets nothing)
        spark.sparkContext.parallelize([1], 1).map(lambda _: bytearray(1 << 60)).collect()
    line = one_line(e.value, cfg, "features")
    assert line.startswith("features failed: PythonException: MemoryError") and "driver_memory" in line, line
    assert spark.range(3).count() == 3


@pytest.mark.spark
def test_a_metastore_booted_by_another_process_is_named(spark, data_dir):
    """The shared session's JVM (our child) has booted Derby under data_dir; a command there says who has it."""
    assert spark.range(1).count() == 1
    r, seconds = _reelrank("query", "--spark", "--data-dir", str(data_dir), "SELECT 1")
    line = _one_line(r.stderr)
    assert r.returncode == 2 and seconds < FAST_EXIT_S
    assert f"the embedded metastore under {data_dir} is in use by pid " in line
    assert f"the Spark JVM of pid {os.getpid()}" in line, line


def _corrupt_parquet_folder(root: Path) -> Path:
    """A folder of two Parquet files written by pyarrow, the second overwritten with junk; returns that file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True)
    for i in range(2):
        pq.write_table(pa.table({"id": list(range(i * 10, i * 10 + 10))}), root / f"part-{i:05d}.parquet")
    bad = root / "part-00001.parquet"
    bad.write_bytes(b"junk" * 64)
    return bad


@pytest.mark.slow
@pytest.mark.spark
def test_query_names_a_corrupt_file_from_the_command_line(tmp_path):
    """The one JVM-starting subprocess here: ``reelrank query`` on a corrupt Parquet file prints one line."""
    bad = _corrupt_parquet_folder(tmp_path / "published")
    r, _ = _reelrank("query", "--spark", "--data-dir", str(tmp_path / "d"),
                     f"SELECT count(*) FROM parquet.`{bad.parent}`",
                     timeout=300)
    ours = [ln for ln in r.stderr.splitlines() if ln.startswith("reelrank: ")]
    assert r.returncode == 1 and len(ours) == 1, r.stderr[-3000:]
    assert ours[0].startswith(f"reelrank: query failed: cannot read {bad}: not a Parquet file"), ours[0]
    # the rest is Spark's start-up chatter: no Java or Python trace (-v shows them), nothing printed twice
    assert "Traceback" not in r.stderr and "\tat " not in r.stderr and "Exception" not in r.stderr.replace(ours[0], "")
    assert len(r.stderr.splitlines()) < 20, r.stderr
