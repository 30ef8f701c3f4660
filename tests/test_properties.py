"""Property-based tests (hypothesis) of ingest and indexing: nothing lost or invented, nothing non-finite accepted,
indexes dense and stable across runs."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank import matrix
from reelrank.inputs import ingest, sources
from reelrank.inputs.sources import INTERACTIONS_SCHEMA

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # dozens of Spark jobs per property

RUN_DATE = date(2026, 12, 2)
SPARK_SETTINGS = settings(
    max_examples=15,
    deadline=None,  # a Spark job takes a second or so, most of it fixed cost
    database=None,  # no .hypothesis folder in the working tree
    phases=[Phase.explicit, Phase.generate],  # shrinking a failure would run Spark jobs for many minutes
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
WHITE_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
"""Unicode's White_Space characters (Java's ``(?U)\\s``); Python's ``str.strip`` also strips \\x1c-\\x1f."""

# ---- raw values: valid ones, and every kind of junk a file can hold -------------------------------------------

WHITESPACE = st.sampled_from(["", " ", "   ", "\t", " \t ", "\u00a0", "\u3000", "\r", "\n"])
IDS = st.one_of(
    st.sampled_from(["u1", "u2", "i1", "i2", " u1 ", "u1 ", "-5", "0042", "9223372036854775808", "🎬", "电影", "a,b"]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=6),
    WHITESPACE,
    st.none(),
)
RATINGS = st.one_of(
    st.integers(-2, 8).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.floats(0.0, 6.0).map(lambda r: f"{r:.2f}"),
    st.sampled_from(["NaN", "nan", "inf", "-inf", "Infinity", "+Infinity", "1e400", "-1e400", "3,5", "abc", "4.0",
                     " 3 ", "1e0", "", " "]),  # fmt: skip
    st.none(),
)
SECONDS = st.integers(-(10**10), 2 * 10**9)
TIMESTAMPS = st.one_of(
    SECONDS.map(str),
    SECONDS.map(lambda s: str(s * 1000)),  # milliseconds
    st.integers(-(10**20), 10**20).map(str),  # any magnitude, past a long too
    st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1)).map(lambda d: d.isoformat()),
    st.sampled_from(["yesterday", "12.5", "1e9", "2026-13-45", "2026-12-02T25:00:00", "NaN", "Infinity", "", " "]),
    st.none(),
)
ROWS = st.lists(st.tuples(IDS, IDS, RATINGS, TIMESTAMPS, st.sampled_from(["a.csv", "b.csv"])), max_size=40)


def _frame(spark, rows):
    """Raw interactions, numbered per file from line 2 as a CSV source numbers them."""
    next_row = {"a.csv": 2, "b.csv": 2}
    numbered = []
    for user, item, rating, ts, file in rows:
        numbered.append((user, item, rating, ts, file, next_row[file]))
        next_row[file] += 1
    return spark.createDataFrame(numbered, INTERACTIONS_SCHEMA), numbered


def _validate(df, cfg):
    return ingest.validate(df, cfg.ingest, sources.rating_scale("csv", cfg.ingest), RUN_DATE)


def _stripped(value: str | None) -> str:
    return (value or "").strip(WHITE_SPACE)


@SPARK_SETTINGS
@given(rows=ROWS)
@example(rows=[("\t", "i1", "4", "1700000000", "a.csv"), ("u1", "\u00a0", "4", "1700000000", "a.csv")])  # not ids
@example(rows=[("u1", "i1", "4", "1700000000", "a.csv")] * 2 + [("u1", "i1", "5", "1700000000", "b.csv")])
def test_every_row_is_accepted_or_rejected_once_and_accepted_rows_are_clean(spark, cfg, rows):
    df, numbered = _frame(spark, rows)
    accepted, rejected = _validate(df, cfg)
    out = accepted.withColumn(C.REASON, F.lit(None).cast("string")).unionByName(
        rejected.select(C.SOURCE_FILE, C.SOURCE_ROW, C.REASON), allowMissingColumns=True
    ).collect()  # one job
    acc = [r for r in out if r.reason is None]

    assert sorted((r.source_file, r.source_row) for r in out) == sorted((n[4], n[5]) for n in numbered)
    assert {r.reason for r in out if r.reason is not None} <= set(ingest.REASONS)
    scale = sources.rating_scale("csv", cfg.ingest)
    limit = ingest.future_limit(RUN_DATE, cfg.ingest)
    for r in acc:
        assert r.user_id and r.user_id == _stripped(r.user_id), repr(r.user_id)
        assert r.item_id and r.item_id == _stripped(r.item_id), repr(r.item_id)
        assert math.isfinite(r.rating) and scale.min <= r.rating <= scale.max, r.rating
        assert r.ts is not None and r.ts <= limit, r.ts
    assert len({(r.user_id, r.item_id) for r in acc}) == len(acc), "one accepted rating per (user, item)"
    # a row without a user, item, rating or timestamp (after stripping) is never accepted
    raw = {(n[4], n[5]): n for n in numbered}
    for r in acc:
        user, item, rating, ts, _, _ = raw[(r.source_file, r.source_row)]
        assert _stripped(user) and _stripped(item) and _stripped(rating) and _stripped(ts)


NON_FINITE = st.sampled_from(["NaN", "nan", "-NaN", "inf", "-inf", "+inf", "Infinity", "-Infinity", "1e400", "-1e999"])


@SPARK_SETTINGS
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.sampled_from(["i1", "i2"]),
                  st.one_of(NON_FINITE, st.integers(1, 5).map(str)),
                  st.one_of(NON_FINITE, SECONDS.map(str)), st.just("a.csv")),  # fmt: skip
        min_size=1,
        max_size=30,
    )
)
def test_no_nan_or_inf_is_accepted_or_reaches_the_statistics(spark, cfg, rows):
    df, _ = _frame(spark, rows)
    accepted, _ = _validate(df, cfg)
    got = accepted.collect()
    assert all(math.isfinite(r.rating) and r.ts is not None for r in got)
    # per-entity statistics (published as user_stats / item_stats) of the accepted ratings: finite too
    kept = spark.createDataFrame(got, accepted.schema)  # not validated again
    stats = [
        matrix.entity_stats(kept.withColumn(idx, F.lit(0)), id_col, idx).select("mean_rating", "std_rating")
        for id_col, idx in ((C.USER, C.USER_IDX), (C.ITEM, C.ITEM_IDX))
    ]
    values = stats[0].unionByName(stats[1]).collect()
    assert all(math.isfinite(v) for row in values for v in row), values


INDEX_IDS = st.lists(
    st.one_of(st.sampled_from(["u1", "u2", "u10", "-5", "0042", "42", "🎬", "电影", "e\u0301", "é", "a,b"]),
              st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=4)),  # fmt: skip
    max_size=25,
)


@SPARK_SETTINGS
@given(batch1=INDEX_IDS.filter(bool), batch2=INDEX_IDS)
def test_indexes_are_dense_and_stable_across_runs(spark, batch1, batch2):
    def frame(ids):
        return spark.createDataFrame([(i,) for i in ids], f"{C.USER} string")

    first_rows = matrix.extend_index(frame(batch1), None, C.USER, C.USER_IDX).collect()
    first_map = {r.user_id: r.user_idx for r in first_rows}
    first = spark.createDataFrame(first_rows, f"{C.USER} string, {C.USER_IDX} int")  # as published, read back
    shuffled = frame(list(reversed(batch1)))
    again = {r.user_id: r.user_idx for r in matrix.extend_index(shuffled, None, C.USER, C.USER_IDX).collect()}
    extended = matrix.extend_index(frame(batch2), first, C.USER, C.USER_IDX).collect()
    ext_map = {r.user_id: r.user_idx for r in extended}

    assert again == first_map, "the same ids, in any order, yield the same indexes"
    assert sorted(first_map.values()) == list(range(len(set(batch1))))
    assert len(extended) == len(ext_map), "every id once"
    assert sorted(ext_map.values()) == list(range(len(set(batch1) | set(batch2)))), "dense: 0..n-1, no gaps"
    assert {i: ext_map[i] for i in first_map} == first_map, "batch 1 ids keep their indexes"
    new = sorted(set(batch2) - set(batch1))  # Spark orders strings by UTF-8 bytes, as Python orders code points
    assert [ext_map[i] for i in new] == list(range(len(first_map), len(first_map) + len(new)))


def test_future_limit_is_the_end_of_the_run_date_plus_the_slack(cfg):
    """The bound the properties above rely on (one day of slack in conf/base.toml)."""
    end = datetime(2026, 12, 3, tzinfo=UTC).timestamp()
    assert ingest.future_limit(RUN_DATE, cfg.ingest) == end + cfg.ingest.future_slack_days * 86_400
