"""Source readers: every kind on tiny files, exact line numbers, clear fatal errors."""

from __future__ import annotations

import copy
import dataclasses
import gzip
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import dataset
from pyspark.sql import functions as F

from reelrank.inputs.filesystem import check_readable
from reelrank.inputs.sources import KINDS, RAW_SCHEMA, SourceError, read_source

pytestmark = pytest.mark.spark

NOBODY = 65534

DTYPES = [(f.name, f.dataType.simpleString()) for f in RAW_SCHEMA.fields]


def _src(cfg, **kw):
    return dataclasses.replace(cfg.source, **kw)


def _rows(df):
    """The non-blank rows by (file, line)."""
    return {(r.source_file, r.source_row): (r.user_id, r.item_id, r.rating, r.timestamp)
            for r in df.collect() if not r.blank}  # fmt: skip


def _blank(df):
    return sorted((r.source_file, r.source_row) for r in df.filter("blank").collect())


def _error(spark, cfg, **source):
    """The message of the SourceError that reading ``source`` raises; it is one line."""
    with pytest.raises(SourceError) as e:
        read_source(spark, _src(cfg, **source), cfg.synthetic)
    assert "\n" not in str(e.value) and "error occurred while calling" not in str(e.value)
    return str(e.value)


def test_movielens_100k_format(spark, cfg, tmp_path):
    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n\n22\tx\t9\t878887116\n")
    (tmp_path / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\n\n")
    (tmp_path / "u.item").write_bytes(
        "242|Kolya (1996)|24-Jan-1997||http://x|0|0|1\n302|Café Society (1938)|||http://y|0|1|1\n".encode("latin-1")
    )
    raw = read_source(spark, _src(cfg, kind="movielens-100k", input=str(tmp_path)), cfg.synthetic)
    assert raw.interactions.dtypes == DTYPES
    f = str(tmp_path / "u.data")
    assert _rows(raw.interactions) == {
        (f, 1): ("196", "242", "3", "881250949"),
        (f, 2): ("186", "302", "3", "891717742"),
        (f, 4): ("22", "x", "9", "878887116"),  # bad values flow on
    }
    assert _blank(raw.interactions) == [(f, 3)]  # kept, marked, for ingest to reject
    items = {r.item_id: (r.title, r.genres, r.year) for r in raw.items.collect()}
    assert items == {
        "242": ("Kolya (1996)", ["Comedy"], 1997),  # year from the release date
        "302": ("Café Society (1938)", ["Action", "Comedy"], 1938),  # latin-1; year from the title
    }


def test_movielens_csv_with_quoted_titles(spark, cfg, tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,318,5.0,964982703\n1,50,3.5,964981247\n")
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n318,"Shawshank Redemption, The (1994)",Crime|Drama\n50,Usual Suspects (1995),'
        "Crime|Mystery|Thriller\n7,Untitled,(no genres listed)\n"
    )
    raw = read_source(spark, _src(cfg, kind="movielens-csv", input=str(tmp_path)), cfg.synthetic)
    f = str(tmp_path / "ratings.csv")
    assert _rows(raw.interactions) == {
        (f, 2): ("1", "318", "5.0", "964982703"), (f, 3): ("1", "50", "3.5", "964981247")
    }
    items = {r.item_id: (r.title, r.genres, r.year) for r in raw.items.collect()}
    assert items == {
        "318": ("Shawshank Redemption, The (1994)", ["Crime", "Drama"], 1994),
        "50": ("Usual Suspects (1995)", ["Crime", "Mystery", "Thriller"], 1995),
        "7": ("Untitled", [], None),
    }


def test_generic_csv_folder_with_column_mapping(spark, cfg, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    # different column orders per file, a quoted field with the delimiter, a blank line, a short line
    (folder / "a.csv").write_text('when,who,stars,what\n100,u1,4,"i,1"\n\n200,u2,oops,i2\n')
    (folder / "b.csv").write_text("who,what,stars,when,extra\nu3,i3,5,300,z\nu4\n")
    (folder / "_SUCCESS").write_text("")
    (tmp_path / "items.csv").write_text('what,title,genres,year\n"i,1",One (2001),Drama|War,\ni2,Two,,1999\n')
    mapping = {"user_id": "who", "item_id": "what", "rating": "stars", "timestamp": "when"}
    src = _src(cfg, kind="csv", input=str(folder), columns=mapping, items_input=str(tmp_path / "items.csv"))
    raw = read_source(spark, src, cfg.synthetic)
    a, b = str(folder / "a.csv"), str(folder / "b.csv")
    assert _rows(raw.interactions) == {
        (a, 2): ("u1", "i,1", "4", "100"),
        (a, 4): ("u2", "i2", "oops", "200"),
        (b, 2): ("u3", "i3", "5", "300"),
        (b, 3): ("u4", None, None, None),
    }
    assert _blank(raw.interactions) == [(a, 3)]
    # item metadata: the item column goes by its mapped name; a missing year comes from the title
    items = {r.item_id: (r.title, r.genres, r.year) for r in raw.items.collect()}
    assert items == {"i,1": ("One (2001)", ["Drama", "War"], 2001), "i2": ("Two", [], 1999)}


def test_parquet_rows_numbered_per_file(spark, cfg, tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    for name, start in (("p1.parquet", 0), ("p2.parquet", 100)):
        t = pa.table(
            {"uid": [f"u{k}" for k in range(start, start + 50)], "iid": list(range(start, start + 50)),
             "r": [4.5] * 50, "t": list(range(start, start + 50))}  # fmt: skip
        )
        pq.write_table(t, folder / name, row_group_size=7)  # several row groups per file
    mapping = {"user_id": "uid", "item_id": "iid", "rating": "r", "timestamp": "t"}
    raw = read_source(spark, _src(cfg, kind="parquet", input=str(folder), columns=mapping), cfg.synthetic)
    rows = _rows(raw.interactions)
    assert len(rows) == 100
    for (file, row), (user, item, rating, ts) in rows.items():
        start = 0 if file.endswith("p1.parquet") else 100
        assert user == f"u{start + row - 1}" and item == str(start + row - 1) and rating == "4.5" and ts == item
    assert raw.items is None


def test_line_numbers_exact_across_many_splits(spark, cfg, tmp_path):
    """Line k of each file says k, however the files are split into partitions."""
    folder = tmp_path / "big"
    folder.mkdir()
    for name, n in (("x.csv", 3000), ("y.csv", 1700)):
        lines = ["user_id,item_id,rating,timestamp"] + [f"{k},{name},3,{k}" for k in range(2, n + 1)]
        (folder / name).write_text("\n".join(lines) + "\n")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "4096")
    try:
        raw = read_source(spark, _src(cfg, kind="csv", input=str(folder)), cfg.synthetic)
        df = raw.interactions
        assert df.rdd.getNumPartitions() > 5
        bad = df.filter(F.col("user_id") != F.col("source_row").cast("string")).count()
        assert bad == 0 and df.count() == 2999 + 1699
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")


def test_synthetic_kind(spark, cfg):
    raw = read_source(spark, _src(cfg, kind="synthetic"), cfg.synthetic)
    df = raw.interactions
    assert df.dtypes == DTYPES
    stats = df.agg(F.count("*").alias("n"), F.min("source_row").alias("lo"), F.max("source_row").alias("hi"),
                   F.countDistinct("user_id").alias("users")).first()  # fmt: skip
    assert (stats.n, stats.lo, stats.hi, stats.users) == (
        cfg.synthetic.ratings, 1, cfg.synthetic.ratings, cfg.synthetic.users
    )
    assert raw.items.count() == cfg.synthetic.items
    assert dict(raw.items.dtypes) == {"item_id": "string", "title": "string", "genres": "array<string>", "year": "int"}


def test_missing_folder_and_file_are_named(spark, cfg, tmp_path):
    with pytest.raises(SourceError, match="nowhere"):
        read_source(spark, _src(cfg, kind="movielens-100k", input=str(tmp_path / "nowhere")), cfg.synthetic)
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n")
    with pytest.raises(SourceError, match="u.item"):
        read_source(spark, _src(cfg, kind="movielens-100k", input=str(tmp_path)), cfg.synthetic)
    with pytest.raises(SourceError, match="ratings.csv"):
        read_source(spark, _src(cfg, kind="movielens-csv", input=str(tmp_path)), cfg.synthetic)
    with pytest.raises(SourceError, match="missing.parquet"):
        read_source(spark, _src(cfg, kind="parquet", input=str(tmp_path / "missing.parquet")), cfg.synthetic)
    with pytest.raises(SourceError, match="empty"):
        read_source(spark, _src(cfg, kind="csv", input=""), cfg.synthetic)
    gone = tmp_path / "gone.csv"
    assert _error(spark, cfg, kind="csv", input=str(gone)) == f"csv source: {gone} not found"
    (tmp_path / "nodata").mkdir()
    (tmp_path / "nodata" / "_SUCCESS").write_text("")
    (tmp_path / "nodata" / "notes.txt").write_text("x\n")
    assert _error(spark, cfg, kind="csv", input=str(tmp_path / "nodata")) == (
        f"csv source: no .csv files in folder {tmp_path}/nodata"
    )


def test_empty_and_header_only_files_are_named(spark, cfg, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert _error(spark, cfg, kind="csv", input=str(empty)) == (
        f"{empty}: file is empty (expected a header line naming the columns user_id, item_id, rating, timestamp, "
        "then one interaction per line)"
    )
    header = tmp_path / "header.csv"
    header.write_text("user_id,item_id,rating,timestamp\n")
    assert _error(spark, cfg, kind="csv", input=str(header)) == (
        f"{header}: only a header line, no data (expected one interaction per line after it)"
    )
    folder = tmp_path / "parts"
    folder.mkdir()
    for name in ("p1.csv", "p2.csv"):
        (folder / name).write_text("user_id,item_id,rating,timestamp\r\n")
    assert _error(spark, cfg, kind="csv", input=str(folder)).endswith(
        "p1.csv (and the 1 other files): only a header line, no data (expected one interaction per line after it)"
    )
    (folder / "p3.csv").write_text("user_id,item_id,rating,timestamp\nu,i,4,1\n")  # one file with data is enough
    assert len(_rows(read_source(spark, _src(cfg, kind="csv", input=str(folder)), cfg.synthetic).interactions)) == 1
    (tmp_path / "u.data").write_text("")
    (tmp_path / "u.item").write_text("")
    (tmp_path / "u.genre").write_text("")
    ml = _error(spark, cfg, kind="movielens-100k", input=str(tmp_path))
    assert ml.startswith(f"{tmp_path}/u.data: file is empty")


def test_corrupt_files_are_named_in_one_line(spark, cfg, tmp_path):
    junk = tmp_path / "r.parquet"
    junk.write_bytes(b"not parquet at all")
    message = _error(spark, cfg, kind="parquet", input=str(junk))
    assert message.startswith(f"cannot read {junk}: ") and "not a Parquet file" in message  # the cause, not the job
    gz = tmp_path / "r.csv.gz"
    gz.write_bytes(b"not gzip either")
    assert _error(spark, cfg, kind="csv", input=str(gz)).startswith(f"cannot read {gz}: ")
    good = tmp_path / "ok.csv.gz"
    good.write_bytes(gzip.compress(b"user_id,item_id,rating,timestamp\nu,i,4,1\n"))
    assert _rows(read_source(spark, _src(cfg, kind="csv", input=str(good)), cfg.synthetic).interactions) == {
        (str(good), 2): ("u", "i", "4", "1")
    }


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file; see the test below")
def test_unreadable_file_is_named(spark, cfg, tmp_path):
    f = tmp_path / "ratings.csv"
    f.write_text("user_id,item_id,rating,timestamp\nu,i,4,1\n")
    f.chmod(0)
    try:
        assert _error(spark, cfg, kind="csv", input=str(f)) == f"cannot read {f}: permission denied"
        (tmp_path / "movies.csv").write_text("movieId,title,genres\n")
        assert _error(spark, cfg, kind="movielens-csv", input=str(tmp_path)) == f"cannot read {f}: permission denied"
    finally:
        f.chmod(0o644)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the check as another user")
def test_unreadable_file_is_named_for_another_user():
    """As root every file is readable, so the check runs in a forked child that has become ``nobody``."""
    folder = Path(tempfile.mkdtemp(prefix="reelrank-perm-"))  # under /tmp, which nobody may enter
    try:
        folder.chmod(0o755)
        (folder / "ok.csv").write_text("x\n")
        (folder / "ratings.csv").write_text("x\n")
        (folder / "ratings.csv").chmod(0)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: drop to nobody, check, report through the pipe, exit without cleanup
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                check_readable(str(folder / "ok.csv"))
                check_readable(f"file:{folder}", folder=True)
                try:
                    check_readable(f"file://{folder}/ratings.csv")
                    message = "no error"
                except SourceError as e:
                    message = str(e)
            except BaseException as e:  # noqa: BLE001 - anything the child hits is reported to the test
                message = f"child failed: {e!r}"
            os.write(write_end, message.encode())
            os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        with os.fdopen(read_end) as pipe:
            assert pipe.read() == f"cannot read {folder}/ratings.csv: permission denied"
    finally:
        shutil.rmtree(folder)


def test_missing_column_names_file_column_and_found(spark, cfg, tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("user,item,rating,timestamp\nu,i,3,1\n")
    with pytest.raises(SourceError) as e:
        read_source(spark, _src(cfg, kind="csv", input=str(f)), cfg.synthetic)
    msg = str(e.value)
    assert str(f) in msg and "'user_id'" in msg and "user, item, rating, timestamp" in msg
    pq.write_table(pa.table({"user_id": ["u"], "item_id": ["i"], "rating": [3.0]}), tmp_path / "r.parquet")
    with pytest.raises(SourceError, match=r"r\.parquet: required column 'timestamp' not found"):
        read_source(spark, _src(cfg, kind="parquet", input=str(tmp_path / "r.parquet")), cfg.synthetic)


def test_unknown_kind_lists_valid_ones(spark, cfg):
    unchecked = copy.copy(cfg.source)  # the config re-checks dataclasses.replace, so step past it
    object.__setattr__(unchecked, "kind", "excel")
    with pytest.raises(SourceError) as e:
        read_source(spark, unchecked, cfg.synthetic)
    assert "'excel'" in str(e.value) and all(k in str(e.value) for k in KINDS)


@pytest.mark.slow
def test_real_movielens_100k(spark, cfg):
    folder = dataset("ml-100k")
    raw = read_source(spark, _src(cfg, kind="movielens-100k", input=str(folder)), cfg.synthetic)
    df = raw.interactions
    s = df.agg(F.count("*").alias("n"), F.countDistinct("user_id").alias("users"),
               F.countDistinct("item_id").alias("items"), F.max("source_row").alias("last")).first()  # fmt: skip
    assert (s.n, s.users, s.items, s.last) == (100_000, 943, 1682, 100_000)
    reference = pd.read_csv(folder / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"], dtype=str)
    probe = {r.source_row: (r.user_id, r.item_id, r.rating, r.timestamp)
             for r in df.filter(F.col("source_row").isin(1, 4242, 100_000)).collect()}  # fmt: skip
    assert probe == {k: tuple(reference.iloc[k - 1]) for k in (1, 4242, 100_000)}
    items = raw.items
    assert items.count() == 1682
    assert items.filter(F.size("genres") == 0).count() == 0
    toy = items.filter(F.col("item_id") == "1").first()
    assert (toy.title, toy.genres, toy.year) == ("Toy Story (1995)", ["Animation", "Children's", "Comedy"], 1995)
