"""DuckDB answers without Spark (no JVM here): which SQL it may answer, and when the publish-time manifest is
current. That its answers equal Spark's on a real warehouse is checked in test_pipeline and test_cli."""

from __future__ import annotations

from datetime import date

import pytest

from reelrank import fastread, manifest


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM reelrank.recommendations",
    "SELECT run_date, count(*) FROM reelrank.recommendations GROUP BY run_date ORDER BY run_date",
    "SELECT * FROM reelrank.metrics WHERE run_date = (SELECT max(run_date) FROM reelrank.metrics)",
    "SELECT user_id, rank FROM reelrank.recommendations WHERE run_date = DATE'2026-01-02' AND model LIKE 'm%'",
    "SELECT model, avg(value) / 0, coalesce(k, 0) AS k0 FROM reelrank.metrics WHERE k IN (5, 10) GROUP BY model, k",
    fastread.runs_sql("reelrank", 10),
])
def test_sql_both_engines_read_alike_is_portable(sql):
    assert fastread.not_portable(sql) is None


@pytest.mark.parametrize(("sql", "why"), [
    ("SELECT hash(user_id) FROM reelrank.recommendations", "hash()"),
    ("SELECT concat(user_id, item_id) FROM reelrank.recommendations", "concat()"),
    ("SELECT scores[0] FROM t", "map key"),
    ('SELECT * FROM reelrank.recommendations WHERE model = "mlp"', "double-quoted"),
    ("SELECT 'a\\nb'", "backslash"),
    ("SELECT CAST(score AS STRING) FROM reelrank.recommendations", "cast to other than DATE or DOUBLE"),
    ("SELECT date_format(run_date, 'yyyy') FROM reelrank.runs", "date_format()"),
    ("INSERT INTO reelrank.runs SELECT * FROM reelrank.runs", "SELECT"),
    ("SELECT 1; SELECT 2", "one SELECT"),
    ("SELECT -score FROM reelrank.recommendations", "without a name"),  # "(- score)" in Spark, "-score" in DuckDB
    ("SELECT round(score, 2) AS s FROM reelrank.recommendations", "round()"),  # 1.005: Spark 1.01, DuckDB 1.0
    ("SELECT CAST(score AS INT) AS s FROM reelrank.recommendations", "cast"),  # 2.7: Spark 2, DuckDB 3
    ("SELECT * FROM reelrank.items WHERE title = 'Schindler''s List'", "two single quotes"),
    ("SELECT * FROM reelrank.metrics POSITIONAL JOIN reelrank.runs", "positional"),
    ("SELECT * FROM reelrank.metrics m JOIN reelrank.runs r USING (run_date)", "USING"),
    ("SELECT * EXCLUDE (k) FROM reelrank.metrics", "EXCLUDE"),
    ("SELECT model FROM reelrank.metrics LIMIT 10%", "LIMIT"),
    ("SELECT DISTINCT ON (model) model FROM reelrank.metrics", "DISTINCT ON"),
    ("SELECT model FROM reelrank.metrics UNION BY NAME SELECT model FROM reelrank.metrics", "union_by_name"),
    ("SELECT CAST(k AS DOUBLE) FROM reelrank.metrics", "without a name"),
])
def test_sql_the_engines_may_read_differently_goes_to_spark(sql, why):
    assert why in (fastread.not_portable(sql) or "")


def test_unaliased_items_get_spark_names():
    assert fastread.spark_name("count_star()") == "count(1)"
    assert fastread.spark_name('(sum("value") / 0)') == "(sum(value) / 0)"  # DuckDB quotes a keyword
    assert fastread.not_portable("SELECT count(DISTINCT user_id), max(score) / 2 FROM t") is None
    assert "without a name" in fastread.not_portable("SELECT AVG(score) FROM t")  # Spark: avg(score)


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
    assert manifest.read(str(tmp_path), "published_runs") is None  # another layout: ask Spark
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
