"""Ingest validation: one reason per rejected row, first failing check wins, nothing lost."""

from __future__ import annotations

import dataclasses

import pytest
from pyspark.sql import functions as F

from reelrank import ingest
from reelrank.ingest import summarize, validate
from reelrank.sources import INTERACTIONS_SCHEMA

pytestmark = pytest.mark.spark

F1, F2 = "a.csv", "b.csv"
# (user_id, item_id, rating, timestamp, source_file, source_row) -> expected reason (None: accepted)
CASES = [
    (("", "i1", "4", "100", F1, 2), ingest.MISSING_USER_ID),
    ((None, "i1", "4", "100", F1, 3), ingest.MISSING_USER_ID),
    (("  ", "i1", "x", "", F1, 4), ingest.MISSING_USER_ID),  # several failures: the first check wins
    ((" u1 ", "   ", "4", "100", F1, 5), ingest.MISSING_ITEM_ID),
    (("u1", "i1", "abc", "100", F1, 6), ingest.UNPARSEABLE_RATING),
    (("u1", "i1", "", "100", F1, 7), ingest.UNPARSEABLE_RATING),
    (("u1", "i1", "NaN", "100", F1, 8), ingest.UNPARSEABLE_RATING),
    (("u1", "i1", "7", "100", F1, 9), ingest.RATING_OUT_OF_RANGE),
    (("u1", "i1", "0.5", "100", F1, 10), ingest.RATING_OUT_OF_RANGE),
    (("u1", "i1", "4", None, F1, 11), ingest.MISSING_TIMESTAMP),
    (("u1", "i1", "4", "yesterday", F1, 12), ingest.UNPARSEABLE_TIMESTAMP),
    (("u1", "i1", "4", "12.5", F1, 13), ingest.UNPARSEABLE_TIMESTAMP),
    # (u1, i2): row 14 accepted; 15 is the same rating and time ("4.0" == "4", whitespace trimmed); 16 is older
    (("u1", "i2", "4", "100", F1, 14), None),
    (("u1", "i2", "4.0", " 100 ", F1, 15), ingest.DUPLICATE),
    (("u1", "i2", "3", "50", F1, 16), ingest.SUPERSEDED),
    # (u2, i2): same time, different ratings: the later one in source order wins, across files too
    (("u2", "i2", "2", "200", F1, 17), ingest.SUPERSEDED),
    (("u2", "i2", "3", "200", F2, 2), None),
    # an exact duplicate of a superseded row is a duplicate (checked first)
    (("u2", "i2", "2", "200", F2, 3), ingest.DUPLICATE),
    (("u2", "i1", "5", "2020-01-01T00:00:00Z", F1, 18), None),
    ((" u3 ", "i1", "1", "300", F2, 4), None),
    (("u3", "i3", "5.0", "-20", F2, 5), None),
]


@pytest.fixture(scope="module")
def result(spark, cfg):
    raw = spark.createDataFrame([row for row, _ in CASES], INTERACTIONS_SCHEMA)
    accepted, rejected = validate(raw, cfg.ingest)
    return raw, accepted.collect(), rejected.collect(), accepted, rejected


def test_every_row_gets_the_expected_outcome(result):
    _, accepted, rejected, _, _ = result
    got = {(r.source_file, r.source_row): r.reason for r in rejected}
    got.update({(r.source_file, r.source_row): None for r in accepted})
    expected = {(row[4], row[5]): reason for row, reason in CASES}
    assert got == expected


def test_invariant_accepted_plus_rejected_is_input(result):
    raw, accepted, rejected, _, _ = result
    keys_in = sorted((r.source_file, r.source_row) for r in raw.collect())
    keys_out = sorted(
        [(r.source_file, r.source_row) for r in accepted] + [(r.source_file, r.source_row) for r in rejected]
    )
    assert keys_out == keys_in


def test_accepted_values_are_trimmed_and_typed(result):
    _, accepted, _, accepted_df, _ = result
    assert dict(accepted_df.dtypes) == {
        "user_id": "string", "item_id": "string", "rating": "double", "ts": "bigint",
        "source_file": "string", "source_row": "bigint",
    }  # fmt: skip
    rows = {(r.user_id, r.item_id): (r.rating, r.ts) for r in accepted}
    assert rows == {
        ("u1", "i2"): (4.0, 100),
        ("u2", "i2"): (3.0, 200),
        ("u2", "i1"): (5.0, 1577836800),
        ("u3", "i1"): (1.0, 300),
        ("u3", "i3"): (5.0, -20),
    }


def test_rejected_keep_raw_values_and_explain(result):
    _, _, rejected, _, rejected_df = result
    assert rejected_df.columns == [
        "user_id", "item_id", "rating", "timestamp", "source_file", "source_row", "reason", "detail"
    ]
    by_row = {(r.source_file, r.source_row): r for r in rejected}
    assert by_row[(F1, 9)].detail == "rating '7' outside [1.0, 5.0]"
    assert by_row[(F1, 9)].rating == "7"
    assert by_row[(F1, 5)].user_id == " u1 "  # raw, untrimmed
    assert by_row[(F1, 6)].detail == "rating 'abc' is not a number"
    assert by_row[(F1, 2)].detail == "user_id is empty"
    assert by_row[(F1, 11)].detail == "timestamp is empty"
    assert "'yesterday'" in by_row[(F1, 12)].detail
    assert by_row[(F1, 15)].detail == f"same user, item, rating and timestamp as {F1}:14"
    assert by_row[(F1, 16)].detail.endswith(f"at {F1}:14")
    assert by_row[(F1, 17)].detail.endswith(f"at {F2}:2")
    assert by_row[(F2, 3)].detail.endswith(f"as {F1}:17")
    assert all(r.detail for r in rejected)


def test_bounds_come_from_config(spark, cfg):
    raw = spark.createDataFrame([("u", "i", "7", "1", F1, 2), ("u", "j", "0", "1", F1, 3)], INTERACTIONS_SCHEMA)
    accepted, rejected = validate(raw, dataclasses.replace(cfg.ingest, rating_min=0.0, rating_max=10.0))
    assert accepted.count() == 2 and rejected.count() == 0


def test_summarize_counts_every_reason(result):
    raw, _, _, accepted_df, rejected_df = result
    summary = summarize(accepted_df, rejected_df)
    expected = {reason: sum(1 for _, r in CASES if r == reason) for reason in ingest.REASONS}
    assert {k: summary[k] for k in ingest.REASONS} == expected
    assert summary["accepted"] == sum(1 for _, r in CASES if r is None)
    assert summary["input"] == raw.count() == summary["accepted"] + summary["rejected"]


def test_large_input_invariant(spark, cfg):
    """Many rows with random defects: the split loses and invents nothing."""
    df = spark.range(2000).select(
        F.concat(F.lit("u"), (F.col("id") % 97).cast("string")).alias("user_id"),
        F.concat(F.lit("i"), (F.col("id") % 31).cast("string")).alias("item_id"),
        F.when(F.col("id") % 13 == 0, F.lit("bad")).otherwise(((F.col("id") % 6)).cast("string")).alias("rating"),
        ((F.col("id") * 7919) % 1000).cast("string").alias("timestamp"),
        F.lit(F1).alias("source_file"),
        (F.col("id") + 2).alias("source_row"),
    )
    accepted, rejected = validate(df, cfg.ingest)
    s = summarize(accepted, rejected)
    assert s["input"] == 2000
    assert accepted.groupBy("user_id", "item_id").count().filter("count > 1").count() == 0
    assert s[ingest.UNPARSEABLE_RATING] == len(range(0, 2000, 13))


@pytest.mark.slow
def test_real_movielens_100k_is_all_accepted(spark, cfg):
    """MovieLens 100k is clean: every row accepted, values equal to a pandas read of u.data."""
    import dataclasses as dc

    import pandas as pd
    from conftest import dataset

    from reelrank.sources import read_source

    folder = dataset("ml-100k")
    raw = read_source(spark, dc.replace(cfg.source, kind="movielens-100k", input=str(folder)), cfg.synthetic)
    accepted, rejected = validate(raw.interactions, cfg.ingest)
    s = summarize(accepted, rejected)
    assert (s["accepted"], s["rejected"]) == (100_000, 0)
    ref = pd.read_csv(folder / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"])
    got = accepted.agg(F.sum("rating").alias("r"), F.sum("ts").alias("t")).first()
    assert (got.r, got.t) == (float(ref.r.sum()), int(ref.t.sum()))


def test_synthetic_source_is_all_accepted(spark, cfg):
    from reelrank.sources import read_source

    raw = read_source(spark, cfg.source, cfg.synthetic)
    s = summarize(*validate(raw.interactions, cfg.ingest))
    assert (s["accepted"], s["rejected"]) == (cfg.synthetic.ratings, 0)
