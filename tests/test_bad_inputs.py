"""The bad-input corpus (tests/data/bad, made by tests/data/make_bad.py), each case read as the generic ``csv`` source.

Every case either stops with a one-line :class:`SourceError` naming the file, or is accepted with the stated reason
for each rejected line, every other data line accepted: accepted + rejected = every line after the header.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank.inputs import ingest, sources
from reelrank.inputs.sources import SourceError, read_source

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # each case is a whole ingest in Spark

BAD = Path(__file__).resolve().parent / "data" / "bad"
RUN_DATE = date(2026, 12, 2)
T = 1_700_000_000
JAVA_NOISE = re.compile(r"Traceback|py4j|Py4J|\bo\d+\.\w+|java\.|at org\.apache")
"""What a one-line message must not contain: a Python trace, py4j's call ids ("o61.open"), a Java trace."""


@dataclass(frozen=True)
class Fails:
    """read_source stops with a one-line SourceError naming ``names`` (a path under the case) and saying ``says``."""

    names: str
    says: str


@dataclass(frozen=True)
class Accepts:
    """Every data line is accepted but those in ``rejected`` (line -> reason)."""

    rejected: dict[int, str] = field(default_factory=dict)
    values: dict[int, tuple[str, str, float, int]] = field(default_factory=dict)
    """line -> (user_id, item_id, rating, ts) of an accepted line, compared exactly."""
    details: dict[int, str] = field(default_factory=dict)
    """line -> a part of the rejected line's detail."""


@dataclass(frozen=True)
class Case:
    input: str
    """The path read, relative to tests/data/bad (a case's folder, or a file in it)."""
    outcome: Fails | Accepts


U10K, I10K = "u" * 10_000, "i" * 10_000
CASES: dict[str, Case] = {
    # ---- structure
    "wrong_delimiter": Case("wrong_delimiter", Fails("data.csv", "required column 'user_id' not found")),
    "missing_column": Case("missing_column", Fails("data.csv", "required column 'rating' not found")),
    "extra_columns": Case("extra_columns", Accepts(values={2: ("u1", "i1", 4.0, T), 3: ("u2", "i2", 3.0, T)})),
    # fields missing on a line read as empty; fields beyond the header's are ignored
    "short_and_long_lines": Case("short_and_long_lines", Accepts(
        {3: "wrong_field_count", 4: "wrong_field_count", 5: "wrong_field_count"}, values={2: ("u1", "i1", 4.0, T)},
        details={3: "2 fields; the header has 4", 4: "1 field;", 5: "5 fields"})),
    "header_only": Case("header_only", Fails("data.csv", "only a header line")),
    "empty_file": Case("empty_file", Fails("data.csv", "file is empty")),
    "bom": Case("bom", Accepts(values={2: ("u1", "i1", 4.0, T)})),
    "crlf": Case("crlf", Accepts({4: "unparseable_rating"}, values={2: ("u1", "i1", 4.0, T), 3: ("u2", "i2", 3.0, T)},
                                 details={4: "'x'"})),
    "gzip_file": Case("gzip/data.csv.gz", Accepts({4: "missing_item_id"}, values={3: ("u2", "i2", 3.0, T)})),
    "gzip_folder": Case("gzip", Accepts({4: "missing_item_id"}, values={3: ("u2", "i2", 3.0, T)})),
    "quoted_commas": Case("quoted_commas", Accepts(values={
        2: ("a,b", "i1", 4.0, T), 3: ("u2", "Heat, 1995", 3.0, T), 4: ("u3", "i3", 5.0, T),
        5: ("u4", 'say "hi"', 2.0, T),  # RFC 4180: a doubled quote inside quotes is one quote
    })),
    # ---- ratings
    "decimal_comma": Case("decimal_comma", Accepts({2: "unparseable_rating", 3: "unparseable_rating"},
                                                   values={4: ("u3", "i3", 3.5, T)}, details={2: "'3,5'"})),
    "non_numeric_rating": Case("non_numeric_rating", Accepts(
        {2: "unparseable_rating", 3: "unparseable_rating", 4: "unparseable_rating", 5: "unparseable_rating"},
        values={6: ("u5", "i1", 4.0, T), 7: ("u6", "i1", 4.0, T)}, details={2: "'abc'", 3: "empty"})),
    # NaN is no number; an infinity is a number outside every scale
    "nan_inf_rating": Case("nan_inf_rating", Accepts(
        {2: "unparseable_rating", 3: "unparseable_rating", 4: "rating_out_of_range", 5: "rating_out_of_range",
         6: "rating_out_of_range", 7: "rating_out_of_range"}, values={8: ("u7", "i1", 4.0, T)})),
    "out_of_range_rating": Case("out_of_range_rating", Accepts(
        dict.fromkeys(range(2, 8), "rating_out_of_range"),
        values={8: ("u7", "i1", 1.0, T), 9: ("u8", "i1", 5.0, T), 10: ("u9", "i1", 3.7, T), 11: ("u10", "i1", 1.0, T)},
        details={2: "[1.0, 5.0]", 7: "'1e10'"})),
    # ---- identifiers: kept as the exact strings, only surrounding spaces trimmed
    "empty_ids": Case("empty_ids", Accepts(
        {2: "missing_user_id", 3: "missing_user_id", 4: "missing_item_id", 5: "missing_user_id"},
        values={6: ("u2", "i2", 4.0, T)})),
    "negative_ids": Case("negative_ids", Accepts(
        values={2: ("-5", "-1", 4.0, T), 3: ("0", "-0", 3.0, T), 4: ("-0", "0", 2.0, T)})),
    "overflow_ids": Case("overflow_ids", Accepts(values={
        2: ("9223372036854775808", "18446744073709551616", 4.0, T),
        3: ("-9223372036854775809", "9223372036854775807", 3.0, T), 4: ("0042", "42", 2.0, T)})),
    "long_ids": Case("long_ids", Accepts(values={2: (U10K, "i1", 4.0, T), 3: ("u2", I10K, 3.0, T)})),
    "unicode_ids": Case("unicode_ids", Accepts(values={
        2: ("🎬", "电影", 4.0, T), 3: ("ユーザー", "Ünïcödé", 3.0, T), 4: ("e\u0301", "é", 2.0, T),
        5: ("مستخدم", "👍🏽", 5.0, T)})),
    # ---- timestamps (run date 2026-12-02, default slack one day: the limit is 2026-12-04T00:00:00Z)
    "ms_timestamps": Case("ms_timestamps", Accepts(
        {2: "timestamp_not_seconds", 3: "timestamp_not_seconds", 4: "timestamp_not_seconds",
         5: "timestamp_in_future"},  # 99999999999 s is year 5138, below the milliseconds threshold
        values={6: ("u1", "i5", 4.0, T)},
        details={2: "milliseconds", 3: "microseconds", 4: "nanoseconds"})),
    "future_timestamps": Case("future_timestamps", Accepts(
        {3: "timestamp_in_future", 4: "timestamp_in_future", 5: "timestamp_in_future"},
        values={2: ("u1", "i1", 4.0, 1_796_342_399), 6: ("u1", "i5", 4.0, 1_796_212_800), 7: ("u1", "i6", 4.0, T)},
        details={3: "2026-12-02"})),
    "bad_timestamps": Case("bad_timestamps", Accepts(
        {2: "unparseable_timestamp", 3: "unparseable_timestamp", 4: "unparseable_timestamp", 5: "missing_timestamp",
         6: "unparseable_timestamp", 7: "missing_timestamp", 8: "unparseable_timestamp"},
        values={9: ("u1", "i8", 4.0, -20)}, details={2: "'yesterday'"})),  # before 1970 is allowed
    # ---- duplicates: exact ones keep the first; of one user's ratings of one item the latest timestamp wins,
    # ties going to the last in source order
    "exact_duplicates": Case("exact_duplicates", Accepts(
        {3: "duplicate", 4: "duplicate"}, values={2: ("u1", "i1", 4.0, T), 5: ("u2", "i1", 3.0, T)},
        details={4: "data.csv:2"})),
    "conflicting_duplicates": Case("conflicting_duplicates", Accepts(
        {2: "superseded", 3: "superseded", 6: "superseded"},
        values={4: ("u1", "i1", 5.0, T), 5: ("u2", "i1", 5.0, T + 500)}, details={2: "data.csv:4", 6: "data.csv:5"})),
    "blank_lines": Case("blank_lines", Accepts(
        {3: "blank_line", 4: "blank_line", 6: "blank_line", 7: "blank_line", 10: "blank_line",
         9: "missing_user_id"})),  # ",,," is a record of empty fields, not a blank line
    # ---- degenerate but valid
    "single_rating_user": Case("single_rating_user", Accepts(values={5: ("u2", "i1", 2.0, T)})),
    "lonely_item": Case("lonely_item", Accepts(values={6: ("u2", "i9", 1.0, T)})),
    "all_equal_ratings": Case("all_equal_ratings", Accepts()),
    "single_user": Case("single_user", Accepts()),
    # ---- paths
    "missing_path": Case("missing_path/nowhere.csv", Fails("nowhere.csv", "not found")),
    "no_data_files": Case("no_data_files", Fails("", "no .csv files")),
    "unreadable": Case("unreadable", Fails("data.csv", "permission denied")),
}


def _data_lines(path: Path) -> int:
    """Lines after the header, counted here without Spark (a last line may lack its newline)."""
    text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return len(text.removesuffix(b"\n").split(b"\n")) - 1


def _read(spark, cfg, path: Path):
    src = dataclasses.replace(cfg.source, kind="csv", input=str(path), delimiter=",")
    raw = read_source(spark, src, cfg.synthetic)
    return ingest.validate(raw.interactions, cfg.ingest, sources.rating_scale("csv", cfg.ingest), RUN_DATE)


def _can_read(path: Path) -> bool:
    """Root (with its usual capabilities) reads a file of mode 000."""
    try:
        path.open("rb").close()
    except PermissionError:
        return False
    return True


def _assert_one_line(message: str) -> None:
    assert "\n" not in message and not JAVA_NOISE.search(message), message


def test_corpus_matches_the_generator():
    """Every generated case has an outcome here, and the committed files are the generator's current output."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_bad", BAD.parent / "make_bad.py")
    assert spec is not None and spec.loader is not None
    make_bad = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_bad)
    generated = make_bad.cases()
    assert {c.input.split("/")[0] for c in CASES.values()} == set(generated)
    for case, files in generated.items():
        assert {p.name for p in (BAD / case).iterdir()} == set(files), case
        for name, content in files.items():
            assert (BAD / case / name).read_bytes() == content, f"{case}/{name}: run tests/data/make_bad.py"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(spark, cfg, tmp_path, name):
    case = CASES[name]
    path = BAD / case.input
    if name == "unreadable":
        path = tmp_path / "unreadable"
        shutil.copytree(BAD / case.input, path)
        (path / "data.csv").chmod(0)
        if _can_read(path / "data.csv"):
            pytest.skip(f"mode 000 does not stop this process (euid {os.geteuid()}) reading a file")
    outcome = case.outcome

    if isinstance(outcome, Fails):
        with pytest.raises(SourceError) as e:
            _read(spark, cfg, path)[0].count()
        message = str(e.value)
        _assert_one_line(message)
        named = path.parent / outcome.names if path.suffix else path / outcome.names
        assert str(named).rstrip("/") in message and outcome.says in message, message
        return

    accepted, rejected = _read(spark, cfg, path)
    rows = accepted.withColumn(C.REASON, F.lit(None).cast("string")).unionByName(
        rejected.select(C.SOURCE_FILE, C.SOURCE_ROW, C.REASON, ingest.DETAIL), allowMissingColumns=True
    ).collect()  # one job, not two
    acc, rej = [r for r in rows if r.reason is None], [r for r in rows if r.reason is not None]
    files = sorted(p for p in ([path] if path.is_file() else path.iterdir()) if p.name.endswith((".csv", ".csv.gz")))
    assert len(files) == 1
    lines = set(range(2, _data_lines(files[0]) + 2))
    seen = [r.source_row for r in acc] + [r.source_row for r in rej]
    assert sorted(seen) == sorted(lines), "accepted + rejected must be every data line, each once"
    assert {r.source_file for r in acc + rej} == {str(files[0])}
    assert {r.source_row: r.reason for r in rej} == outcome.rejected
    assert set(outcome.rejected.values()) <= set(ingest.REASONS)
    for r in rej:
        _assert_one_line(r.detail)
        assert r.detail
        assert outcome.details.get(r.source_row, "") in r.detail, (r.source_row, r.detail)
    got = {r.source_row: (r.user_id, r.item_id, r.rating, r.ts) for r in acc}
    assert {k: got.get(k) for k in outcome.values} == outcome.values
