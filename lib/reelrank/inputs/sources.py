"""Read interactions (and item metadata) from the configured source, as raw strings with provenance.

Every interaction keeps ``source_file`` and ``source_row`` (1-based line number in that file, the
header being line 1; for Parquet the 1-based row number) so a rejected row can be found again.
Values stay strings: :mod:`reelrank.inputs.ingest` decides what is valid. Blank data lines of text sources stay
rows too (marked :data:`BLANK`), so every line after the header is accepted or rejected. Only structural
problems (a missing, unreadable or empty file, a header without a required column, an unknown kind) are
fatal :class:`SourceError`, one line naming the file. Each source also brings its :class:`RatingScale`.

Line numbers are computed without leaving the JVM: each scanned row gets its file, the byte offset
of its split and its position in the task; one small aggregation gives each split's first
position and row count, from which the per-file line number follows exactly.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import typing
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BooleanType, IntegerType, LongType, StringType, StructField, StructType

from reelrank import columns as C
from reelrank.inputs import filesystem
from reelrank.inputs.filesystem import SourceError
from reelrank.inputs.settings import IngestConfig, SourceConfig, SourceKind, SyntheticConfig
from reelrank.inputs.synthetic import generate

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = typing.get_args(SourceKind)
TIMESTAMP = "timestamp"
"""Raw (unparsed) timestamp column; :mod:`reelrank.inputs.ingest` turns it into ``ts``."""
FIELDS = (C.USER, C.ITEM, C.RATING, TIMESTAMP)
"""The four interaction fields every source provides, as strings."""
SYNTHETIC_FILE = "synthetic"

BLANK = "blank"
"""Boolean column of :attr:`RawInput.interactions`: the line is empty or whitespace (no record at all).
Optional for :func:`reelrank.inputs.ingest.validate` (absent means false); it never reaches a warehouse table."""
WRONG_FIELDS = "wrong_fields"
"""String column of :attr:`RawInput.interactions`: why the line's field count is not the header's (null when it
is, or the source has no lines). Optional for :func:`reelrank.inputs.ingest.validate` like :data:`BLANK`."""

INTERACTIONS_SCHEMA = StructType(
    [StructField(f, StringType()) for f in FIELDS]
    + [StructField(C.SOURCE_FILE, StringType()), StructField(C.SOURCE_ROW, LongType())]
)
"""The columns :func:`reelrank.inputs.ingest.validate` needs; sources add :data:`BLANK` (:data:`RAW_SCHEMA`)."""
RAW_SCHEMA = StructType(
    [*INTERACTIONS_SCHEMA.fields, StructField(BLANK, BooleanType()), StructField(WRONG_FIELDS, StringType())]
)
"""What :func:`read_source` yields as interactions."""
ITEMS_SCHEMA = StructType(
    [
        StructField(C.ITEM, StringType()),
        StructField(C.TITLE, StringType()),
        StructField(C.GENRES, ArrayType(StringType())),
        StructField(C.YEAR, IntegerType()),
    ]
)

ML100K_RATINGS, ML100K_ITEMS, ML100K_GENRES = "u.data", "u.item", "u.genre"
ML100K_ENCODING = "latin-1"
ML_CSV_RATINGS, ML_CSV_MOVIES = "ratings.csv", "movies.csv"
ML_CSV_COLUMNS = {C.USER: "userId", C.ITEM: "movieId", C.RATING: "rating", TIMESTAMP: "timestamp"}
ML_NO_GENRES = "(no genres listed)"
GENRE_SEPARATOR = "|"
YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")
ROWS_PER_PARTITION = 1_000_000
"""Rows per partition of the in-memory synthetic frame (Arrow sends it in many small batches)."""



@dataclass(frozen=True)
class RatingScale:
    """The valid ratings of a source: ``min`` to ``max``, on ``min`` plus whole multiples of ``step`` (0: any)."""

    min: float
    max: float
    step: float

    def describe(self) -> str:
        return f"{self.min}..{self.max}" + (f" in steps of {self.step}" if self.step else "")


KNOWN_SCALES: dict[str, RatingScale] = {
    "movielens-100k": RatingScale(1.0, 5.0, 1.0),  # whole stars
    "movielens-csv": RatingScale(0.5, 5.0, 0.5),  # MovieLens "latest" and 20M/25M/32M: half stars from 0.5
}
"""Scales fixed by a source's format; they override ``[ingest]`` rating_min/rating_max/rating_step."""


def rating_scale(kind: str, cfg: IngestConfig) -> RatingScale:
    """The rating scale of source ``kind``: the format's own, else the one configured in ``[ingest]``."""
    return KNOWN_SCALES.get(kind) or RatingScale(cfg.rating_min, cfg.rating_max, cfg.rating_step)


@dataclass(frozen=True)
class RawInput:
    """What a source yields: raw string interactions with provenance, and item metadata if any."""

    interactions: DataFrame
    """user_id, item_id, rating, timestamp (all strings), source_file (string), source_row (long), blank (bool),
    wrong_fields (string)."""
    items: DataFrame | None
    """item_id, title, genres (array<string>), year (int, nullable); None when the source has none."""


def read_source(spark: SparkSession, source: SourceConfig, synthetic: SyntheticConfig) -> RawInput:
    """Read the source named by ``source.kind``."""
    readers = {
        "synthetic": lambda: _read_synthetic(spark, synthetic),
        "movielens-100k": lambda: _read_ml100k(spark, source.input),
        "movielens-csv": lambda: _read_ml_csv(spark, source.input),
        "parquet": lambda: _read_generic(spark, source, "parquet"),
        "csv": lambda: _read_generic(spark, source, "csv"),
    }
    if source.kind not in readers:
        raise SourceError(f"unknown source.kind {source.kind!r} (valid: {', '.join(KINDS)})")
    raw = readers[source.kind]()
    log.info("source %s %s", source.kind, source.input or "")
    return raw


# ---- kinds -------------------------------------------------------------------------------------


def _read_synthetic(spark: SparkSession, cfg: SyntheticConfig) -> RawInput:
    ratings, items = generate(cfg)
    n = len(ratings)
    as_text = pd.ArrowDtype(pa.string())
    frame = pd.DataFrame(
        {
            C.USER: ratings[C.USER].astype(as_text),
            C.ITEM: ratings[C.ITEM].astype(as_text),
            C.RATING: pd.Series(pa.array(ratings[C.RATING].to_numpy()).cast(pa.string()), dtype=as_text),
            TIMESTAMP: pd.Series(pa.array(ratings[TIMESTAMP].to_numpy()).cast(pa.string()), dtype=as_text),
            C.SOURCE_FILE: pd.Series(pa.array([SYNTHETIC_FILE] * n, type=pa.string()), dtype=as_text)
            if n
            else pd.Series([], dtype=as_text),
            C.SOURCE_ROW: pd.Series(range(1, n + 1), dtype="int64"),
        }
    )
    parts = max(spark.sparkContext.defaultParallelism, math.ceil(n / ROWS_PER_PARTITION))
    interactions = _not_blank(spark.createDataFrame(frame, schema=INTERACTIONS_SCHEMA)).coalesce(parts)
    items_pdf = items.assign(**{C.ITEM: items[C.ITEM].astype(object), C.YEAR: items[C.YEAR].astype("int32")})
    items_df = spark.createDataFrame(items_pdf, schema=ITEMS_SCHEMA)
    return RawInput(interactions, items_df)


def _read_ml100k(spark: SparkSession, folder: str) -> RawInput:
    base = filesystem.require_folder(spark, folder, "movielens-100k")
    ratings = filesystem.require_file(spark, f"{base}/{ML100K_RATINGS}", "movielens-100k ratings")
    item_file = filesystem.require_file(spark, f"{base}/{ML100K_ITEMS}", "movielens-100k items")
    genre_file = filesystem.require_file(spark, f"{base}/{ML100K_GENRES}", "movielens-100k genres")
    if not filesystem.head(spark, ratings, 1):
        raise SourceError(f"{ratings}: file is empty (expected tab-separated user id, item id, rating, timestamp)")

    lines = _numbered(spark.read.text(ratings))
    parts = F.split(F.col("value"), "\t")
    interactions = lines.select(
        *[parts.getItem(k).alias(f) for k, f in enumerate(FIELDS)], C.SOURCE_FILE, C.SOURCE_ROW,
        _is_blank(F.col("value"), "\t").alias(BLANK),
        _wrong_fields(F.size(parts), len(FIELDS), "expected 4 tab-separated fields (user, item, rating, "
                      "timestamp)").alias(WRONG_FIELDS),
    )

    genre_names = {}
    for line in filesystem.read_bytes(spark, genre_file).decode(ML100K_ENCODING).splitlines():
        if "|" in line:
            name, idx = line.rsplit("|", 1)
            genre_names[int(idx)] = name
    genres = [genre_names[k] for k in sorted(genre_names)]
    rows = []
    for line in filesystem.read_bytes(spark, item_file).decode(ML100K_ENCODING).splitlines():
        f = line.split("|")
        if len(f) < 5 + len(genres):
            continue
        flags = f[-len(genres) :]
        year = re.search(r"(\d{4})$", f[2].strip())
        rows.append(
            (
                f[0].strip(),
                f[1],
                [g for g, flag in zip(genres, flags, strict=False) if flag.strip() == "1"],
                int(year.group(1)) if year else _year_from_title(f[1]),
            )
        )
    return RawInput(interactions, spark.createDataFrame(rows, ITEMS_SCHEMA))


def _read_ml_csv(spark: SparkSession, folder: str) -> RawInput:
    base = filesystem.require_folder(spark, folder, "movielens-csv")
    ratings = filesystem.require_file(spark, f"{base}/{ML_CSV_RATINGS}", "movielens-csv ratings")
    movies = filesystem.require_file(spark, f"{base}/{ML_CSV_MOVIES}", "movielens-csv movies")
    interactions = _read_csv_interactions(spark, [ratings], ML_CSV_COLUMNS, ",")

    reader = csv.reader(io.StringIO(filesystem.read_bytes(spark, movies).decode("utf-8-sig")))
    header = [h.strip() for h in next(reader, [])]
    pos = _positions(header, {"item_id": "movieId", "title": "title", "genres": "genres"}, movies)
    rows = []
    for f in reader:
        if len(f) < len(header):
            continue
        title = f[pos["title"]].strip()
        g = f[pos["genres"]].strip()
        genres = [] if g in ("", ML_NO_GENRES) else g.split(GENRE_SEPARATOR)
        rows.append((f[pos["item_id"]].strip(), title, genres, _year_from_title(title)))
    return RawInput(interactions, spark.createDataFrame(rows, ITEMS_SCHEMA))


def _read_generic(spark: SparkSession, source: SourceConfig, fmt: str) -> RawInput:
    missing = [f for f in FIELDS if f not in source.columns]
    if missing:
        raise SourceError(f"source.columns has no entry for {', '.join(missing)} (it maps {', '.join(FIELDS)})")
    mapping = {f: source.columns[f] for f in FIELDS}
    files = filesystem.list_files(spark, source.input, f".{fmt}", f"{fmt} source")
    if fmt == "csv":
        interactions = _read_csv_interactions(spark, files, mapping, source.delimiter)
    else:
        frames = []
        for path in files:
            df = filesystem.read_parquet(spark, path)
            _check_columns(list(mapping.values()), df.columns, path)
            frames.append(_tag(df.select(*[F.col(f"`{mapping[f]}`").cast("string").alias(f) for f in FIELDS])))
        interactions = _not_blank(_assign_rows(_union(frames)).select(*INTERACTIONS_SCHEMA.names))
    items = _read_items(spark, source) if source.items_input else None
    return RawInput(interactions, items)


def _read_items(spark: SparkSession, source: SourceConfig) -> DataFrame:
    """Item metadata for generic sources: item id (mapped like the interactions), title, genres, year."""
    path = source.items_input
    files = filesystem.list_files(spark, path, None, "items_input")
    if all(f.endswith(".parquet") for f in files):
        df = filesystem.read_parquet(spark, *files)
    else:
        df = spark.read.option("header", True).option("sep", source.delimiter).option("escape", '"').csv(files)
    item_col = source.columns.get(C.ITEM, C.ITEM)
    item_col = item_col if item_col in df.columns else C.ITEM
    _check_columns([item_col], df.columns, path)
    types = dict(df.dtypes)
    title = F.col(C.TITLE).cast("string") if C.TITLE in df.columns else F.lit(None).cast("string")
    if C.GENRES not in df.columns:
        genres = F.lit(None).cast("array<string>")
    elif types[C.GENRES].startswith("array"):
        genres = F.col(C.GENRES).cast("array<string>")
    else:
        text = F.trim(F.col(C.GENRES).cast("string"))
        genres = F.when(
            text.isNull() | (text == "") | (text == ML_NO_GENRES), F.array().cast("array<string>")
        ).otherwise(F.split(text, re.escape(GENRE_SEPARATOR)))
    title_year = F.regexp_extract(title, YEAR_IN_TITLE.pattern, 1)
    year = F.when(title_year != "", title_year.cast("int"))
    if C.YEAR in df.columns:
        year = F.coalesce(F.col(C.YEAR).cast("int"), year)
    return df.select(
        F.trim(F.col(f"`{item_col}`").cast("string")).alias(C.ITEM),
        title.alias(C.TITLE),
        genres.alias(C.GENRES),
        year.alias(C.YEAR),
    ).filter(F.col(C.ITEM).isNotNull())


# ---- CSV with exact line numbers ---------------------------------------------------------------


def _read_csv_interactions(spark: SparkSession, files: list[str], mapping: dict[str, str], sep: str) -> DataFrame:
    """Header-checked CSV files: one row per data line (blank ones marked :data:`BLANK`), quoted fields handled.

    An empty file, or a source whose files hold a header and no data line, is a :class:`SourceError`.
    """
    frames = []
    header_only = []
    for path in files:
        head = filesystem.head(spark, path, 2)
        if not head:
            raise SourceError(f"{filesystem.display_name(path)}: file is empty (expected a header line naming the "
                              f"columns {', '.join(mapping.values())}, then one interaction per line)")
        if len(head) == 1:
            header_only.append(filesystem.display_name(path))
        header = next(csv.reader([head[0].lstrip("\ufeff")], delimiter=sep), [])
        header = [h.strip() for h in header]
        pos = _positions(header, mapping, path)
        ddl = ", ".join(f"c{k} STRING" for k in range(len(header)))
        parsed = F.from_csv(F.col("value"), ddl, {"sep": sep, "escape": '"', "mode": "PERMISSIVE"})  # RFC 4180 ""
        lines = _tag(spark.read.text(path))
        wrong = _wrong_fields(_field_count(F.col("value"), sep), len(header), f"the header has {len(header)}")
        frames.append(lines.select("*", *[parsed.getField(f"c{pos[f]}").alias(f) for f in FIELDS],
                                   wrong.alias(WRONG_FIELDS)))
    if len(header_only) == len(files):
        where = header_only[0] if len(files) == 1 else f"{header_only[0]} (and the {len(files) - 1} other files)"
        raise SourceError(f"{where}: only a header line, no data (expected one interaction per line after it)")
    numbered = _assign_rows(_union(frames)).withColumn(BLANK, _is_blank(F.col("value"), sep))
    return numbered.filter(F.col(C.SOURCE_ROW) > 1).select(*RAW_SCHEMA.names)


def _field_count(line: Column, sep: str) -> Column:
    """How many ``sep``-separated fields a CSV line holds, quoted fields (RFC 4180, ``""`` inside) counting once."""
    unquoted = F.regexp_replace(line, '"([^"]|"")*"', "")
    return F.size(F.split(unquoted, re.escape(sep), -1))


def _wrong_fields(count: Column, expected: int, expectation: str) -> Column:
    """The :data:`WRONG_FIELDS` detail: null when ``count`` is ``expected``."""
    noun = F.when(count == 1, F.lit(" field; ")).otherwise(F.lit(" fields; "))
    return F.when(count != expected, F.concat(count.cast("string"), noun, F.lit(expectation)))


def _is_blank(line: Column, sep: str) -> Column:
    """The line holds nothing but whitespace other than the delimiter (``,,,`` is a record of empty fields)."""
    delimiter = "".join(f"\\u{ord(ch):04x}" for ch in sep if ord(ch) <= 0xFFFF)
    return line.rlike(f"^[\\s&&[^{delimiter}]]*$" if delimiter else "^\\s*$")


def _not_blank(interactions: DataFrame) -> DataFrame:
    """``interactions`` of a source without lines (Parquet, in-memory): :data:`BLANK` false, :data:`WRONG_FIELDS`
    null throughout."""
    return interactions.withColumn(BLANK, F.lit(False)).withColumn(WRONG_FIELDS, F.lit(None).cast("string"))


def _positions(header: list[str], mapping: dict[str, str], path: str) -> dict[str, int]:
    _check_columns(list(mapping.values()), header, path)
    return {ours: header.index(theirs) for ours, theirs in mapping.items()}


def _check_columns(required: list[str], found: list[str], path: str) -> None:
    for name in required:
        if name not in found:
            raise SourceError(f"{filesystem.display_name(path)}: required column {name!r} not found "
                              f"(columns: {', '.join(found) or 'none'})")


# ---- row numbering -----------------------------------------------------------------------------

_FILE, _BLOCK, _PART, _POS = "_rr_file", "_rr_block", "_rr_part", "_rr_pos"


def _tag(scan: DataFrame) -> DataFrame:
    """Mark each scanned row with its file, split offset, task partition and position in the task.

    Must sit directly on a file scan: ``input_file_name`` is only known while the scan runs.
    """
    return scan.select(
        "*",
        F.input_file_name().alias(_FILE),
        F.expr("input_file_block_start()").alias(_BLOCK),
        F.spark_partition_id().alias(_PART),
        F.monotonically_increasing_id().alias(_POS),
    )


def _numbered(scan: DataFrame) -> DataFrame:
    return _assign_rows(_tag(scan))


def _assign_rows(tagged: DataFrame) -> DataFrame:
    """Add ``source_file`` and ``source_row`` (1-based, per file) to rows marked by :func:`_tag`.

    Rows of one split are read in file order and consecutively within one task, so a row's line is
    its offset from the split's first row plus the rows of the file's earlier splits.
    """
    spark = tagged.sparkSession
    splits = (
        tagged.groupBy(_FILE, _BLOCK, _PART)
        .agg(F.min(_POS).alias("_first"), F.count(F.lit(1)).alias("_n"))
        .collect()
    )
    rows = []
    seen: dict[str, int] = {}
    for s in sorted(splits, key=lambda r: (r[_FILE], r[_BLOCK])):
        before = seen.get(s[_FILE], 0)
        rows.append((s[_FILE], s[_BLOCK], s[_PART], s["_first"], before, filesystem.display_name(s[_FILE])))
        seen[s[_FILE]] = before + s["_n"]
    schema = f"{_FILE} string, {_BLOCK} long, {_PART} int, _first long, _before long, {C.SOURCE_FILE} string"
    table = spark.createDataFrame(rows, schema)
    joined = tagged.join(F.broadcast(table), [_FILE, _BLOCK, _PART], "inner")
    row = (F.col(_POS) - F.col("_first") + F.col("_before") + 1).alias(C.SOURCE_ROW)
    keep = [c for c in tagged.columns if c not in (_FILE, _BLOCK, _PART, _POS)]
    return joined.select(*keep, C.SOURCE_FILE, row)


def _union(frames: list[DataFrame]) -> DataFrame:
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def _year_from_title(title: str) -> int | None:
    m = YEAR_IN_TITLE.search(title)
    return int(m.group(1)) if m else None
