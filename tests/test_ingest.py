"""Ingest validation: one reason per rejected row, first failing check wins, nothing lost."""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest
from pyspark.sql import functions as F

from reelrank.inputs import ingest
from reelrank.inputs.ingest import summarize, validate
from reelrank.inputs.sources import (
    INTERACTIONS_SCHEMA,
    KNOWN_SCALES,
    RAW_SCHEMA,
    RatingScale,
    rating_scale,
    read_source,
)

pytestmark = pytest.mark.spark

RUN_DATE = date(2024, 5, 1)
LIMIT = 1714694400  # 2024-05-03 00:00:00 UTC: the end of RUN_DATE plus the default future_slack_days = 1.0
HALF_STARS = KNOWN_SCALES["movielens-csv"]
F1, F2 = "a.csv", "b.csv"
# (user_id, item_id, rating, timestamp, source_file, source_row[, blank[, wrong_fields]]) -> expected reason
# (None: accepted),
# validated on the half-star scale 0.5..5.0 against RUN_DATE
CASES = [
    (("", "", "", "", F1, 19, True), ingest.BLANK_LINE),
    (("u1", "i1", "4", "100", F1, 20, True), ingest.BLANK_LINE),  # blank wins over everything
    (("u1", "i1", "3", "5", F1, 39, False, "5 fields; the header has 4"), ingest.WRONG_FIELD_COUNT),  # u1,i1,3,5,T
    (("u1", "i1", None, None, F1, 40, False, "2 fields; the header has 4"), ingest.WRONG_FIELD_COUNT),
    ((None, None, None, None, F1, 21), ingest.MISSING_USER_ID),  # ',,,' is a record of empty fields, not blank
    (("", "i1", "4", "100", F1, 2), ingest.MISSING_USER_ID),
    ((None, "i1", "4", "100", F1, 3), ingest.MISSING_USER_ID),
    (("  ", "i1", "x", "", F1, 4), ingest.MISSING_USER_ID),  # several failures: the first check wins
    ((" u1 ", "   ", "4", "100", F1, 5), ingest.MISSING_ITEM_ID),
    (("u1", "i1", "abc", "100", F1, 6), ingest.UNPARSEABLE_RATING),
    (("u1", "i1", "", "100", F1, 7), ingest.UNPARSEABLE_RATING),
    (("u1", "i1", "NaN", "100", F1, 8), ingest.UNPARSEABLE_RATING),
    (("u1", "i1", "7", "100", F1, 9), ingest.RATING_OUT_OF_RANGE),
    (("u1", "i1", "0", "100", F1, 10), ingest.RATING_OUT_OF_RANGE),
    (("u1", "i1", "5.5", "100", F1, 22), ingest.RATING_OUT_OF_RANGE),
    (("u1", "i1", "-inf", "100", F1, 23), ingest.RATING_OUT_OF_RANGE),
    (("u1", "i1", "3.7", "100", F1, 24), ingest.RATING_OFF_SCALE),
    (("u1", "i1", "4.25", "100", F1, 25), ingest.RATING_OFF_SCALE),
    (("u1", "i1", "3.7", "", F1, 26), ingest.RATING_OFF_SCALE),  # rating checks come before timestamp checks
    (("u1", "i1", "4", None, F1, 11), ingest.MISSING_TIMESTAMP),
    (("u1", "i1", "4", "yesterday", F1, 12), ingest.UNPARSEABLE_TIMESTAMP),
    (("u1", "i1", "4", "12.5", F1, 13), ingest.UNPARSEABLE_TIMESTAMP),
    (("u1", "i1", "4", "99999999999999999999", F1, 27), ingest.UNPARSEABLE_TIMESTAMP),  # beyond a long
    (("u1", "i1", "4", "1700000000000", F1, 28), ingest.TIMESTAMP_NOT_SECONDS),  # milliseconds
    (("u1", "i1", "4", "1700000000000000", F1, 29), ingest.TIMESTAMP_NOT_SECONDS),  # microseconds
    (("u1", "i1", "4", "1700000000000000000", F1, 30), ingest.TIMESTAMP_NOT_SECONDS),  # nanoseconds
    (("u1", "i1", "4", "-1700000000000", F1, 31), ingest.TIMESTAMP_NOT_SECONDS),
    (("u1", "i1", "4", "99999999999", F1, 32), ingest.TIMESTAMP_IN_FUTURE),  # seconds: year 5138
    (("u1", "i1", "4", "4102444800", F1, 33), ingest.TIMESTAMP_IN_FUTURE),  # 2100-01-01
    (("u1", "i1", "4", "2100-01-01T00:00:00Z", F1, 34), ingest.TIMESTAMP_IN_FUTURE),
    (("u1", "i1", "4", str(LIMIT + 1), F1, 35), ingest.TIMESTAMP_IN_FUTURE),
    (("u4", "i1", "4", str(LIMIT), F1, 36), None),  # the last second allowed
    (("u4", "i2", "0.5", "100", F1, 37), None),  # half stars from 0.5
    (("u4", "i3", "4.5", "100", F1, 38), None),
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


def _raw(spark, rows):
    """Raw interactions as a source yields them (``blank`` false and ``wrong_fields`` null unless given)."""
    return spark.createDataFrame([(*row, False, None)[:8] if len(row) == 6 else (*row, None)[:8] for row in rows],
                                 RAW_SCHEMA)


@pytest.fixture(scope="module")
def result(spark, cfg):
    raw = _raw(spark, [row for row, _ in CASES])
    accepted, rejected = validate(raw, cfg.ingest, HALF_STARS, RUN_DATE)
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
        ("u4", "i1"): (4.0, LIMIT),
        ("u4", "i2"): (0.5, 100),
        ("u4", "i3"): (4.5, 100),
    }


def test_rejected_keep_raw_values_and_explain(result):
    _, _, rejected, _, rejected_df = result
    assert rejected_df.columns == [
        "user_id", "item_id", "rating", "timestamp", "source_file", "source_row", "reason", "detail"
    ]
    by_row = {(r.source_file, r.source_row): r for r in rejected}
    assert by_row[(F1, 9)].detail == "rating '7' outside [0.5, 5.0]"
    assert by_row[(F1, 10)].detail == "rating '0' outside [0.5, 5.0]"
    assert by_row[(F1, 24)].detail == "rating '3.7' is not on the scale 0.5..5.0 in steps of 0.5"
    assert by_row[(F1, 19)].detail == "the line is blank"
    assert by_row[(F1, 28)].detail == (
        "timestamp '1700000000000' looks like milliseconds; expected unix seconds "
        '(set [ingest] timestamp_units = "auto" to convert)'
    )
    assert "looks like microseconds" in by_row[(F1, 29)].detail
    assert "looks like nanoseconds" in by_row[(F1, 30)].detail
    assert by_row[(F1, 33)].detail == (
        "timestamp '4102444800' is 2100-01-01 00:00:00 UTC, after 2024-05-03 00:00:00 UTC: the end of the run date "
        "2024-05-01 (UTC) plus [ingest] future_slack_days = 1.0"
    )
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


def test_generic_scale_comes_from_config(spark, cfg):
    rows = [("u", "i", "7", "1", F1, 2), ("u", "j", "0", "1", F1, 3), ("u", "k", "2.25", "1", F1, 4)]
    raw = spark.createDataFrame(rows, INTERACTIONS_SCHEMA)
    wide = dataclasses.replace(cfg.ingest, rating_min=0.0, rating_max=10.0)
    accepted, rejected = validate(raw, wide, rating_scale("csv", wide), RUN_DATE)  # no blank column: none blank
    assert accepted.count() == 3 and rejected.count() == 0
    whole = dataclasses.replace(wide, rating_step=1.0)
    assert rating_scale("parquet", whole) == RatingScale(0.0, 10.0, 1.0)
    _, rejected = validate(raw, whole, rating_scale("parquet", whole), RUN_DATE)
    assert [(r.source_row, r.reason) for r in rejected.collect()] == [(4, ingest.RATING_OFF_SCALE)]
    default = rating_scale("csv", cfg.ingest)  # 1..5, any value
    assert default == RatingScale(1.0, 5.0, 0.0)
    _, rejected = validate(raw, cfg.ingest, default, RUN_DATE)
    assert sorted((r.source_row, r.reason) for r in rejected.collect()) == [
        (2, ingest.RATING_OUT_OF_RANGE), (3, ingest.RATING_OUT_OF_RANGE)
    ]


def test_known_sources_bring_their_scale_whatever_the_config(cfg):
    odd = dataclasses.replace(cfg.ingest, rating_min=2.0, rating_max=3.0, rating_step=0.25)
    assert rating_scale("movielens-100k", odd) == RatingScale(1.0, 5.0, 1.0)
    assert rating_scale("movielens-csv", odd) == RatingScale(0.5, 5.0, 0.5)
    assert rating_scale("synthetic", odd) == RatingScale(2.0, 3.0, 0.25)


def test_auto_units_convert_finer_timestamps_to_seconds(spark, cfg):
    rows = [
        ("u", "i1", "4", "1700000000", F1, 2),
        ("u", "i2", "4", "1700000000999", F1, 3),  # ms, rounded down to the second
        ("u", "i3", "4", "1700000000123456", F1, 4),  # us
        ("u", "i4", "4", "1700000000123456789", F1, 5),  # ns
        ("u", "i5", "4", "-1700000000500", F1, 6),  # ms before 1970: floor, not truncation
        ("u", "i6", "4", "-1500", F1, 7),  # small values are seconds
        ("u", "i1", "4", "1700000000000", F1, 8),  # the same second as row 2 in ms: a duplicate
        ("u", "i7", "4", "4102444800000", F1, 9),  # ms in 2100: converted, then in the future
    ]
    auto = dataclasses.replace(cfg.ingest, timestamp_units="auto")
    accepted, rejected = validate(_raw(spark, rows), auto, HALF_STARS, RUN_DATE)
    assert {r.item_id: r.ts for r in accepted.collect()} == {
        "i1": 1700000000, "i2": 1700000000, "i3": 1700000000, "i4": 1700000000, "i5": -1700000001, "i6": -1500
    }
    assert {r.source_row: r.reason for r in rejected.collect()} == {
        8: ingest.DUPLICATE, 9: ingest.TIMESTAMP_IN_FUTURE
    }
    seconds = dataclasses.replace(cfg.ingest, timestamp_units="seconds")
    accepted, rejected = validate(_raw(spark, rows), seconds, HALF_STARS, RUN_DATE)
    assert sorted(r.source_row for r in accepted.collect()) == [2, 7]
    assert {r.source_row: r.reason for r in rejected.collect()} == {
        k: ingest.TIMESTAMP_NOT_SECONDS for k in (3, 4, 5, 6, 8, 9)
    }


def test_future_is_relative_to_the_run_date_and_slack(spark, cfg):
    half_day_late = LIMIT - 86_400 + 43_200  # 2024-05-02 12:00 UTC: half a day after the end of RUN_DATE
    raw = _raw(spark, [("u", "i", "4", str(half_day_late), F1, 2), ("u", "j", "4", "2024-05-02T12:00:00Z", F1, 3)])

    def rejected_rows(slack, run_date):
        _, rejected = validate(raw, dataclasses.replace(cfg.ingest, future_slack_days=slack), HALF_STARS, run_date)
        return sorted((r.source_row, r.reason) for r in rejected.collect())

    assert rejected_rows(1.0, RUN_DATE) == []
    assert rejected_rows(0.0, RUN_DATE) == [(2, ingest.TIMESTAMP_IN_FUTURE), (3, ingest.TIMESTAMP_IN_FUTURE)]
    assert rejected_rows(0.0, date(2024, 5, 2)) == []


def test_blank_lines_are_counted_as_rejected(spark, cfg, tmp_path):
    """A CSV with 3 blank lines (empty, spaces, a tab): accepted + rejected = every data line."""
    lines = ["user_id,item_id,rating,timestamp", "u1,i1,4,100", "", "u1,i2,3,200", "   ", "u2,i1,5,300", "\t",
             ",,,", "u2,i2,2,400"]  # fmt: skip
    f = tmp_path / "r.csv"
    f.write_text("\n".join(lines) + "\n")
    raw = read_source(spark, dataclasses.replace(cfg.source, kind="csv", input=str(f)), cfg.synthetic)
    accepted, rejected = validate(raw.interactions, cfg.ingest, rating_scale("csv", cfg.ingest), RUN_DATE)
    s = summarize(accepted, rejected)
    assert s["input"] == len(lines) - 1 == s["accepted"] + s["rejected"]
    assert sorted((r.source_row, r.reason) for r in rejected.collect()) == [
        (3, ingest.BLANK_LINE), (5, ingest.BLANK_LINE), (7, ingest.BLANK_LINE), (8, ingest.MISSING_USER_ID)
    ]
    assert s["accepted"] == 4
    assert rejected.columns == list(ingest.REJECTED_COLUMNS)


def test_movielens_csv_keeps_half_stars(spark, cfg, tmp_path):
    ratings = ["userId,movieId,rating,timestamp", "1,1,0.5,964982703", "1,2,4.5,964982703", "1,3,0,964982703",
               "1,4,5.5,964982703", "1,5,3.0,964982703"]  # fmt: skip
    (tmp_path / "ratings.csv").write_text("\n".join(ratings) + "\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n" + "".join(f"{k},M{k},Drama\n" for k in range(1, 6)))
    src = dataclasses.replace(cfg.source, kind="movielens-csv", input=str(tmp_path))
    raw = read_source(spark, src, cfg.synthetic)
    accepted, rejected = validate(raw.interactions, cfg.ingest, rating_scale(src.kind, cfg.ingest), RUN_DATE)
    assert sorted(r.rating for r in accepted.collect()) == [0.5, 3.0, 4.5]
    assert sorted((r.rating, r.reason) for r in rejected.collect()) == [
        ("0", ingest.RATING_OUT_OF_RANGE), ("5.5", ingest.RATING_OUT_OF_RANGE)
    ]


def test_rejected_share_above_the_setting_fails_with_one_line(cfg):
    counts = dict.fromkeys(ingest.REASONS, 0)
    counts.update({ingest.RATING_OUT_OF_RANGE: 371, ingest.DUPLICATE: 500, ingest.ACCEPTED: 2146})
    counts[ingest.REJECTED] = 871
    counts[ingest.INPUT] = 3017
    with pytest.raises(ingest.TooManyRejected) as e:
        ingest.check_rejected_share(counts, cfg.ingest, "/data/rejected_interactions/run_date=2024-05-01")
    assert str(e.value) == (
        "ingest: 371 of 3,017 input rows (12.3%) are invalid (rating_out_of_range 371), above [ingest] "
        "max_rejected_share = 0.05; the rejected rows are in /data/rejected_interactions/run_date=2024-05-01 "
        "— fix the input or raise the setting"
    )
    ingest.check_rejected_share(counts, dataclasses.replace(cfg.ingest, max_rejected_share=0.13), "x")  # 12.3% is fine
    counts.update({ingest.RATING_OUT_OF_RANGE: 150, ingest.ACCEPTED: 2367})  # 5.0% invalid: at the limit, passes
    ingest.check_rejected_share(counts, cfg.ingest, "x")
    only_duplicates = dict(counts, **{ingest.RATING_OUT_OF_RANGE: 0})
    ingest.check_rejected_share(only_duplicates, dataclasses.replace(cfg.ingest, max_rejected_share=0.0), "x")


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
    accepted, rejected = validate(df, cfg.ingest, rating_scale("csv", cfg.ingest), RUN_DATE)
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

    folder = dataset("ml-100k")
    raw = read_source(spark, dc.replace(cfg.source, kind="movielens-100k", input=str(folder)), cfg.synthetic)
    accepted, rejected = validate(raw.interactions, cfg.ingest, rating_scale("movielens-100k", cfg.ingest), RUN_DATE)
    s = summarize(accepted, rejected)
    assert (s["accepted"], s["rejected"]) == (100_000, 0)
    ref = pd.read_csv(folder / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"])
    got = accepted.agg(F.sum("rating").alias("r"), F.sum("ts").alias("t")).first()
    assert (got.r, got.t) == (float(ref.r.sum()), int(ref.t.sum()))


def test_synthetic_source_is_all_accepted(spark, cfg):
    raw = read_source(spark, cfg.source, cfg.synthetic)
    s = summarize(*validate(raw.interactions, cfg.ingest, rating_scale("synthetic", cfg.ingest), RUN_DATE))
    assert (s["accepted"], s["rejected"]) == (cfg.synthetic.ratings, 0)
