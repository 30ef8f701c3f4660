"""DuckDB answers without Spark (no JVM here): ``reelrank query``, ``runs`` and ``where`` over a warehouse laid out
as a publish lays it out (each table's version folders, ``published_runs``, the manifest written by
:mod:`reelrank.warehouse.manifest`), and "publish under way" when the manifest is not current. That the same files give
Spark SQL's answers on a night the nightly published is checked in test_cli."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reelrank.config import Config, load_config
from reelrank.warehouse import fastread, manifest

REPO = Path(__file__).resolve().parents[1]
DB = "reelrank"
DAY1, DAY2 = date(2026, 1, 2), date(2026, 1, 3)


def _config(data: Path | str, **warehouse) -> Config:
    return load_config(REPO / "conf" / "base.toml", overrides={"warehouse": {"data_dir": str(data), **warehouse}})


def _db(data: Path) -> Path:
    return data / "warehouse" / f"{DB}.db"


def _recommendations(users: list[str], model: str = "mlp") -> pa.Table:
    return pa.table({"user_id": [u for u in users for _ in (1, 2)], "item_id": [f"i{n}" for n in range(2 * len(users))],
                     "rank": [1, 2] * len(users), "score": [0.9, 0.5] * len(users), "model": [model] * 2 * len(users)})


def _metrics() -> pa.Table:
    return pa.table({"model": ["mlp", "mlp", "als"], "metric": ["ndcg", "rmse", "ndcg"], "k": [10, None, 10],
                     "value": [0.25, 0.9, 0.5]})


def _publish(data: Path, day: date, run_id: str, tables: dict[str, pa.Table]) -> None:
    """What a publish leaves: each table's version folder, the date's ``published_runs`` folder, the manifest."""
    db = _db(data)
    base = manifest.read(str(db), "published_runs") or manifest.Manifest(DB, {}, {}, [])  # before the flip
    folders: dict[str, str] = {}
    for name, table in {**tables, "published_runs": pa.table({
            "run_id": [run_id], "published_at": [datetime(2026, 1, 4, tzinfo=UTC)]})}.items():
        folder = db / name / f"run_date={day.isoformat()}" / run_id
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "part-00000.parquet")
        folders[name] = str(folder)
    columns = {name: [*table.column_names, "run_date"] for name, table in tables.items()}
    columns["published_runs"] = ["run_id", "published_at", "run_date"]
    manifest.write(str(db), manifest.updated(base, day, run_id, folders, columns,
                                             manifest.pointer_dirs(str(db), "published_runs")))


def _record_runs(data: Path, rows: list[tuple[str, date, str, int, str | None]]) -> None:
    """``runs`` rows as Spark appends them: ``(run_id, run_date, status, minute recorded, error)``."""
    folder = _db(data) / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = [datetime(2026, 1, 4, 0, minute, tzinfo=UTC) for _, _, _, minute, _ in rows]
    pq.write_table(pa.table({
        "run_id": [r[0] for r in rows], "run_date": [r[1] for r in rows], "status": [r[2] for r in rows],
        "started_at": [datetime(2026, 1, 4, tzinfo=UTC).replace(hour=int(r[0][1:])) for r in rows],
        "finished_at": stamp, "seconds": [float(r[3]) for r in rows],
        "stage_rows": pa.array([[("score", 4)] if r[2] == "published" else [] for r in rows],
                               pa.map_(pa.string(), pa.int64())),
        "published_model": ["mlp" if r[2] == "published" else None for r in rows], "error": [r[4] for r in rows],
        "recorded_at": stamp,
    }), folder / f"part-{len(list(folder.iterdir())):05d}.parquet")


@pytest.fixture
def night(tmp_path) -> Path:
    """Two published dates, 2026-01-02 rerun once (r3 replaced r1); the runs table with every attempt."""
    data = tmp_path / "data"
    _publish(data, DAY1, "r1", {"recommendations": _recommendations(["u1", "u2", "u3"]), "metrics": _metrics()})
    _publish(data, DAY2, "r2", {"recommendations": _recommendations(["u1"]), "metrics": _metrics()})
    _publish(data, DAY1, "r3", {"recommendations": _recommendations(["u1", "u2"], "als"), "metrics": _metrics()})
    _record_runs(data, [("r1", DAY1, "started", 1, None), ("r1", DAY1, "published", 2, None),
                        ("r2", DAY2, "started", 3, None), ("r2", DAY2, "published", 4, None),
                        ("r3", DAY1, "started", 5, None), ("r3", DAY1, "published", 6, None),
                        ("r4", DAY2, "started", 7, None), ("r4", DAY2, "failed", 8, "boom\nthe trace")])
    return data


def test_query_is_duckdb_sql_over_the_published_tables(night):
    cfg = _config(night)
    columns, rows = fastread.query(cfg, f"SELECT run_date, model, count(*) AS n FROM {DB}.recommendations "
                                        f"GROUP BY run_date, model ORDER BY run_date")
    assert columns == ["run_date", "model", "n"]
    assert rows == [(DAY1, "als", 4), (DAY2, "mlp", 2)]  # the rerun r3 shows for 2026-01-02, not r1
    columns, rows = fastread.query(cfg, f"SELECT p.run_id, count(*) FROM {DB}.recommendations r JOIN "
                                        f"{DB}.published_runs p USING (run_date) GROUP BY ALL ORDER BY 1")
    assert columns == ["run_id", "count_star()"] and rows == [("r2", 2), ("r3", 4)]  # DuckDB's names and syntax
    _, rows = fastread.query(cfg, f"SELECT k, 1.0 / 0 AS x FROM {DB}.metrics WHERE run_date = DATE '2026-01-03' "
                                  f"ORDER BY k")
    assert rows == [(None, None), (10, None), (10, None)]  # NULLs first and x / 0 NULL, as in Spark
    assert len(fastread.query(cfg, f"SELECT * FROM {DB}.recommendations", max_rows=3)[1]) == 3  # of 6
    with pytest.raises(fastread.duckdb.CatalogException, match="recommendations_versions"):
        fastread.query(cfg, f"SELECT * FROM {DB}.recommendations_versions")  # the metastore's tables: --spark


def test_a_flip_the_manifest_does_not_list_is_a_publish_under_way(night):
    cfg = _config(night)
    (_db(night) / "published_runs" / "run_date=2026-01-04" / "r5").mkdir(parents=True)  # flipped, manifest not yet
    with pytest.raises(fastread.PublishUnderWay) as e:
        fastread.query(cfg, f"SELECT count(*) FROM {DB}.recommendations")
    assert str(e.value) == "publish under way, retry or use --spark"
    with pytest.raises(fastread.PublishUnderWay, match="^publish under way, retry in a moment$"):
        fastread.where(cfg, "recommendations", None)
    assert [r[0] for r in fastread.runs(cfg, 10)[1]] == ["r4", "r3", "r2", "r1"]  # runs needs no manifest
    (_db(night) / "published_runs" / "run_date=2026-01-04" / "r5").rmdir()
    assert fastread.query(cfg, f"SELECT count(*) AS n FROM {DB}.recommendations")[1] == [(6,)]
    manifest.remove(str(_db(night)))  # withdrawn by a publish whose columns changed
    with pytest.raises(fastread.PublishUnderWay):
        fastread.query(cfg, "SELECT 1")


def test_nothing_published_is_not_a_publish_under_way(tmp_path):
    cfg = _config(tmp_path / "empty")
    for answer in (lambda: fastread.query(cfg, "SELECT 1"), lambda: fastread.where(cfg, "recommendations", None)):
        with pytest.raises(fastread.NotReadable, match="nothing published under .* yet: run reelrank nightly first") \
                as e:
            answer()
        assert not isinstance(e.value, fastread.PublishUnderWay)
    with pytest.raises(fastread.NotReadable, match="no runs under"):
        fastread.runs(cfg, 10)


def test_duckdb_reads_only_a_local_warehouse_with_the_embedded_metastore(tmp_path):
    for cfg, what in ((_config("hdfs://nn:8020/reelrank"), "local data dir"),
                      (_config(tmp_path, metastore="external"), "embedded metastore")):
        with pytest.raises(fastread.NotReadable, match=f"{what} only.*use reelrank query --spark"):
            fastread.query(cfg, "SELECT 1")
        with pytest.raises(fastread.NotReadable, match=f"{what} only.*use reelrank query --spark"):
            fastread.runs(cfg, 10)


def test_runs_lists_each_runs_latest_row_newest_first(night):
    columns, rows = fastread.runs(_config(night), 3)
    assert columns == ["run_id", "run_date", "status", "seconds", "recommendations", "published_model", "error"]
    assert rows == [("r4", DAY2, "failed", 8.0, None, None, "boom"), ("r3", DAY1, "published", 6.0, 4, "mlp", None),
                    ("r2", DAY2, "published", 4.0, 4, "mlp", None)]


def test_where_names_the_folder_readers_see(night):
    cfg = _config(night)
    assert fastread.where(cfg, "recommendations", None) == str(
        _db(night) / "recommendations" / "run_date=2026-01-03" / "r2")
    assert fastread.where(cfg, "metrics", DAY1) == str(_db(night) / "metrics" / "run_date=2026-01-02" / "r3")
    with pytest.raises(fastread.NotReadable, match=f"^no table {DB}.nope$"):
        fastread.where(cfg, "nope", None)
    with pytest.raises(fastread.NotReadable, match="has no published partition for 2026-01-09"):
        fastread.where(cfg, "metrics", date(2026, 1, 9))


def _reelrank(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reelrank.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "lib")}, timeout=120)


def test_the_commands_answer_without_spark_and_say_why_not_in_one_line(night):
    data = ["--data-dir", str(night)]
    r = _reelrank("query", *data, "--format", "csv", f"SELECT user_id, rank, score FROM {DB}.recommendations "
                  "WHERE run_date = DATE '2026-01-03' ORDER BY rank")
    assert r.returncode == 0 and r.stdout.splitlines() == ["user_id,rank,score", "u1,1,0.9", "u1,2,0.5"], r.stderr
    assert "starting Spark" not in r.stderr
    r = _reelrank("query", *data, "--limit", "2", f"SELECT item_id FROM {DB}.recommendations ORDER BY item_id")
    assert r.returncode == 0 and "| i0      |" in r.stdout and "(first 2 rows; use --limit" in r.stdout, r.stderr
    r = _reelrank("runs", *data, "--limit", "2")
    assert r.returncode == 0 and "| r4     | 2026-01-03 | failed    |" in r.stdout and "2 rows" in r.stdout, r.stderr
    r = _reelrank("where", *data, "metrics", "--date", "2026-01-02")
    assert r.returncode == 0 and r.stdout.strip() == str(_db(night) / "metrics" / "run_date=2026-01-02" / "r3")
    r = _reelrank("query", *data, f"SELECT * FROM {DB}.nope")
    assert r.returncode == 1 and r.stderr.startswith("reelrank: query failed: Catalog Error: Table with name nope")
    assert len(r.stderr.splitlines()) == 1, r.stderr
    (_db(night) / "published_runs" / "run_date=2026-01-04" / "r5").mkdir(parents=True)
    r = _reelrank("query", *data, f"SELECT count(*) FROM {DB}.recommendations")
    assert r.returncode == 1 and r.stderr == "reelrank: publish under way, retry or use --spark\n" and not r.stdout


def _folders(root, *dirs):
    for d in dirs:
        (root / "published_runs" / d).mkdir(parents=True)


def test_manifest_is_trusted_only_while_no_flip_happened_since(tmp_path):
    _folders(tmp_path, "run_date=2026-01-02/r1")
    m = manifest.Manifest("reelrank", {"2026-01-02": "r1"}, {}, manifest.pointer_dirs(str(tmp_path), "published_runs"))
    manifest.write(str(tmp_path), m)
    assert manifest.read(str(tmp_path), "published_runs") == m
    _folders(tmp_path, "run_date=2026-01-03/r2")  # a flip under way (or one that died before the manifest)
    assert manifest.read(str(tmp_path), "published_runs") is None
    (tmp_path / "_published.json").write_text('{"format": 0}')
    assert manifest.read(str(tmp_path), "published_runs") is None  # another layout: not current
    (tmp_path / "_published.json").write_text("{not json")
    assert manifest.read(str(tmp_path), "published_runs") is None


def test_manifest_update_turns_one_date_and_keeps_the_others():
    base = manifest.Manifest(
        "reelrank", {"2026-01-01": "r0", "2026-01-02": "r1"},
        {"recommendations": {"columns": ["a", "run_date"], "versions": {"2026-01-01": "/w/r0", "2026-01-02": "/w/r1"}},
         "gone": {"columns": ["b", "run_date"], "versions": {"2026-01-02": "/w/g1"}}}, [])
    new = manifest.updated(base, date(2026, 1, 2), "r2", {"recommendations": "/w/r2", "published_runs": "/p/r2"},
                           {"recommendations": ["a", "c", "run_date"], "published_runs": ["run_id", "run_date"]},
                           ["x"])
    assert new.published == {"2026-01-01": "r0", "2026-01-02": "r2"}
    assert new.tables["recommendations"] == {"columns": ["a", "c", "run_date"],
                                             "versions": {"2026-01-01": "/w/r0", "2026-01-02": "/w/r2"}}
    assert "gone" not in new.tables  # not written by the run now shown for its only date: the view shows none
    assert new.tables["published_runs"]["versions"] == {"2026-01-02": "/p/r2"} and new.pointer_dirs == ["x"]
