"""Validate raw interactions: every input row is either accepted (typed) or rejected with a reason.

Checks run in the order of :data:`REASONS` and the first failing one names the reason: ``blank_line``,
``wrong_field_count`` (a line with more or fewer fields than the header: extra fields are never dropped silently),
``missing_user_id``, ``missing_item_id``, ``unparseable_rating``, ``rating_out_of_range`` and
``rating_off_scale`` (against the source's :class:`~reelrank.inputs.sources.RatingScale`), ``missing_timestamp``,
``unparseable_timestamp``, ``timestamp_not_seconds`` (integers that look like milli-, micro- or nanoseconds,
unless ``[ingest] timestamp_units = "auto"`` converts them), ``timestamp_in_future`` (after the end of the run
date, UTC, plus ``future_slack_days``). Then, among the rows that passed: exact duplicates (same user, item,
rating and timestamp) keep the first in source order (``duplicate``); of conflicting ratings of one item by
one user the one with the latest timestamp wins, ties going to the last in source order (``superseded``).
Invariant: ``accepted + rejected == input``, row for row.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank.config import STEP_TOLERANCE
from reelrank.inputs.settings import IngestConfig
from reelrank.inputs.sources import BLANK, FIELDS, TIMESTAMP, WRONG_FIELDS, RatingScale

log = logging.getLogger(__name__)

BLANK_LINE = "blank_line"
WRONG_FIELD_COUNT = "wrong_field_count"
MISSING_USER_ID = "missing_user_id"
MISSING_ITEM_ID = "missing_item_id"
UNPARSEABLE_RATING = "unparseable_rating"
RATING_OUT_OF_RANGE = "rating_out_of_range"
RATING_OFF_SCALE = "rating_off_scale"
MISSING_TIMESTAMP = "missing_timestamp"
UNPARSEABLE_TIMESTAMP = "unparseable_timestamp"
TIMESTAMP_NOT_SECONDS = "timestamp_not_seconds"
TIMESTAMP_IN_FUTURE = "timestamp_in_future"
DUPLICATE = "duplicate"
SUPERSEDED = "superseded"
REASONS = (
    BLANK_LINE,
    WRONG_FIELD_COUNT,
    MISSING_USER_ID,
    MISSING_ITEM_ID,
    UNPARSEABLE_RATING,
    RATING_OUT_OF_RANGE,
    RATING_OFF_SCALE,
    MISSING_TIMESTAMP,
    UNPARSEABLE_TIMESTAMP,
    TIMESTAMP_NOT_SECONDS,
    TIMESTAMP_IN_FUTURE,
    DUPLICATE,
    SUPERSEDED,
)
"""Every rejection reason, in the order the checks run."""
INVALID_REASONS = tuple(r for r in REASONS if r not in (DUPLICATE, SUPERSEDED))
"""Reasons that mean a bad row (duplicates and superseded ratings are valid rows made redundant)."""
DETAIL = "detail"
ACCEPTED = "accepted"
REJECTED = "rejected"
INPUT = "input"

ISO_DATE = r"^\d{4}-\d{2}-\d{2}([T ].*)?$"
"""Timestamps that are not integer unix seconds must look like ISO-8601 to be tried as one."""
DECIMAL = r"(?i)^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$|^[+-]?(inf|infinity|nan)$"
"""What a rating may look like before it is parsed: a decimal number (NaN and infinities are rejected later)."""
UNIX_INTEGER = r"^[+-]?\d{1,19}$"
"""An integer timestamp (19 digits hold nanoseconds since 1970; a value beyond a long is unparseable)."""
FINER_UNITS = ((10**17, "nanoseconds", 10**9), (10**14, "microseconds", 10**6), (10**11, "milliseconds", 10**3))
"""(smallest magnitude, unit, per second): an integer this large is taken for that unit; 1e11 s is year 5138."""
SECONDS_PER_DAY = 86_400

ACCEPTED_COLUMNS = (C.USER, C.ITEM, C.RATING, C.TS, C.SOURCE_FILE, C.SOURCE_ROW)
REJECTED_COLUMNS = (*FIELDS, C.SOURCE_FILE, C.SOURCE_ROW, C.REASON, DETAIL)

_U, _I, _R, _T = "_v_user", "_v_item", "_v_rating", "_v_ts"
_CLEAN = {f: f"_c_{f}" for f in FIELDS}
_RAW_R, _INT, _ISO, _UNIT = "_c_rating_or_nan", "_c_ts_integer", "_c_ts_iso", "_c_ts_unit"


class TooManyRejected(ValueError):
    """The share of invalid input rows is above ``[ingest] max_rejected_share``."""


def future_limit(run_date: date, cfg: IngestConfig) -> int:
    """Unix seconds after which a timestamp is in the future: the end of ``run_date`` (UTC) plus the slack."""
    end = datetime.combine(run_date + timedelta(days=1), time(), tzinfo=UTC)
    return int(end.timestamp() + cfg.future_slack_days * SECONDS_PER_DAY)


def annotate(raw: DataFrame, cfg: IngestConfig, scale: RatingScale, run_date: date) -> DataFrame:
    """The raw rows plus parsed values and ``reason``/``detail`` (both null for an accepted row).

    Exposed so a caller can persist it once and split it without re-running the window.
    """
    lo, hi, step = scale.min, scale.max, scale.step
    # Each value is computed once, in stacked projections that the optimizer keeps apart (it does not inline an
    # expensive expression used more than once); written as one nested expression, every check re-ran the
    # trims and regular expressions of every value it read (issue 15: 107 s for 3M rows).
    cleaned = raw.select("*", *(_clean(F.col(f)).alias(_CLEAN[f]) for f in FIELDS))
    user, item, rating_s, ts_s = (F.col(_CLEAN[f]) for f in FIELDS)
    blank = F.coalesce(F.col(BLANK), F.lit(False)) if BLANK in raw.columns else F.lit(False)
    wrong_fields = F.col(WRONG_FIELDS) if WRONG_FIELDS in raw.columns else F.lit(None).cast("string")
    # a plain decimal number (Java would also read 4d, 4f and 0x1p2 as 4.0)
    rating = F.when(rating_s.rlike(DECIMAL), F.expr(f"try_cast(trim(`{C.RATING}`) AS DOUBLE)"))
    integer = F.when(ts_s.rlike(UNIX_INTEGER), F.expr(f"try_cast(trim(`{TIMESTAMP}`) AS BIGINT)"))
    as_iso = F.when(ts_s.rlike(ISO_DATE), F.unix_timestamp(F.expr(f"try_cast(trim(`{TIMESTAMP}`) AS TIMESTAMP)")))
    parsed_values = cleaned.select("*", rating.alias(_RAW_R), integer.alias(_INT), as_iso.alias(_ISO))
    rating = F.when(~F.isnan(F.col(_RAW_R)), F.col(_RAW_R))  # 'NaN' parses as a double but is no rating
    unit: Column = F.lit(None).cast("string")
    in_seconds = F.col(_INT)
    for smallest, name, per_second in reversed(FINER_UNITS):  # the largest magnitude decides
        finer = F.abs(F.col(_INT)) >= F.lit(smallest)
        unit = F.when(finer, F.lit(name)).otherwise(unit)
        in_seconds = F.when(finer, F.expr(f"(`{_INT}` - pmod(`{_INT}`, {per_second})) div {per_second}")).otherwise(
            in_seconds)
    convert = cfg.timestamp_units == "auto"
    values = parsed_values.select("*", rating.alias(_R), unit.alias(_UNIT),
                                  F.coalesce(in_seconds if convert else F.col(_INT), F.col(_ISO)).alias(_T))
    rating, ts, unit = F.col(_R), F.col(_T), F.col(_UNIT)
    steps = (rating - F.lit(lo)) / F.lit(step) if step else F.lit(0.0)
    limit = future_limit(run_date, cfg)
    limit_text = datetime.fromtimestamp(limit, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    zone = raw.sparkSession.conf.get("spark.sql.session.timeZone")
    quoted_rating, quoted_ts = _quoted(C.RATING), _quoted(TIMESTAMP)

    checks: list[tuple[Column, str, Column]] = [
        (blank, BLANK_LINE, F.lit("the line is blank")),
        (wrong_fields.isNotNull(), WRONG_FIELD_COUNT, wrong_fields),
        (user.isNull(), MISSING_USER_ID, F.lit("user_id is empty")),
        (item.isNull(), MISSING_ITEM_ID, F.lit("item_id is empty")),
        (
            rating.isNull(),
            UNPARSEABLE_RATING,
            F.when(rating_s.isNull(), F.lit("rating is empty")).otherwise(
                F.concat(F.lit("rating "), quoted_rating, F.lit(" is not a number"))
            ),
        ),
        (
            (rating < lo) | (rating > hi),
            RATING_OUT_OF_RANGE,
            F.concat(F.lit("rating "), quoted_rating, F.lit(f" outside [{lo}, {hi}]")),
        ),
        (
            F.abs(steps - F.round(steps)) >= STEP_TOLERANCE,
            RATING_OFF_SCALE,
            F.concat(F.lit("rating "), quoted_rating, F.lit(f" is not on the scale {scale.describe()}")),
        ),
        (ts_s.isNull(), MISSING_TIMESTAMP, F.lit("timestamp is empty")),
        (
            ts.isNull(),
            UNPARSEABLE_TIMESTAMP,
            F.concat(
                F.lit("timestamp "), quoted_ts, F.lit(" is neither integer unix seconds nor an ISO-8601 date-time")
            ),
        ),
        (
            F.lit(not convert) & unit.isNotNull(),
            TIMESTAMP_NOT_SECONDS,
            F.concat(F.lit("timestamp "), quoted_ts, F.lit(" looks like "), unit,
                     F.lit('; expected unix seconds (set [ingest] timestamp_units = "auto" to convert)')),
        ),
        (
            ts > F.lit(limit),
            TIMESTAMP_IN_FUTURE,
            F.concat(F.lit("timestamp "), quoted_ts, F.lit(" is "), F.from_unixtime(ts), F.lit(f" {zone}, after "),
                     F.lit(f"{limit_text}: the end of the run date {run_date} (UTC) plus [ingest] future_slack_days "
                           f"= {cfg.future_slack_days}")),
        ),
    ]
    reason: Column = F.lit(None).cast("string")
    detail: Column = F.lit(None).cast("string")
    for failed, name, text in reversed(checks):
        reason = F.when(failed, F.lit(name)).otherwise(reason)
        detail = F.when(failed, text).otherwise(detail)

    parsed = values.select(*raw.columns, user.alias(_U), item.alias(_I), rating, ts, reason.alias(C.REASON),
                           detail.alias(DETAIL))  # fmt: skip

    # One window over (user, item) among the rows that passed (each rejected row is a window of its own, so the
    # parse runs once and a file of bad rows does not pile up in one task): equal (ts, rating) runs are exact
    # duplicates, whose first row in source order represents them; the representative with the latest
    # (ts, source order) wins.
    valid = F.col(C.REASON).isNull()
    pair = Window.partitionBy(_U, _I, F.when(~valid, F.struct(C.SOURCE_FILE, C.SOURCE_ROW)))
    ordered = pair.orderBy(_T, _R, C.SOURCE_FILE, C.SOURCE_ROW)
    so_far = ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    same = (F.lag(_T).over(ordered) == F.col(_T)) & (F.lag(_R).over(ordered) == F.col(_R))
    where = F.struct(F.col(C.SOURCE_FILE).alias("f"), F.col(C.SOURCE_ROW).alias("r"))
    return (
        parsed.withColumn("_dup", F.coalesce(same, F.lit(False)))
        .withColumn("_first", F.last(F.when(~F.col("_dup"), where), ignorenulls=True).over(so_far))
        .withColumn("_key", F.when(~F.col("_dup"), F.struct(F.col(_T), C.SOURCE_FILE, C.SOURCE_ROW)))
        .withColumn("_winner", F.max("_key").over(pair))
        .select(
            *parsed.columns[: -2],
            F.when(~valid, F.col(C.REASON))
            .when(F.col("_dup"), F.lit(DUPLICATE))
            .when(F.col("_key") != F.col("_winner"), F.lit(SUPERSEDED))
            .alias(C.REASON),
            F.when(~valid, F.col(DETAIL))
            .when(
                F.col("_dup"),
                F.concat(F.lit("same user, item, rating and timestamp as "), _where("_first.f", "_first.r")),
            )
            .when(
                F.col("_key") != F.col("_winner"),
                F.concat(F.lit("superseded by a later rating of this item by this user at "),
                         _where(f"_winner.{C.SOURCE_FILE}", f"_winner.{C.SOURCE_ROW}")),  # fmt: skip
            )
            .alias(DETAIL),
        )
    )


def validate(
    raw: DataFrame, cfg: IngestConfig, scale: RatingScale, run_date: date
) -> tuple[DataFrame, DataFrame]:
    """Split raw string interactions into ``(accepted, rejected)``, ratings checked against ``scale`` and
    timestamps against ``run_date``.

    accepted: user_id, item_id (trimmed strings), rating (double), ts (long unix seconds),
    source_file, source_row. rejected: the raw strings, source_file, source_row, reason, detail.
    """
    marked = annotate(raw, cfg, scale, run_date)
    return split(marked)


def split(marked: DataFrame) -> tuple[DataFrame, DataFrame]:
    """``(accepted, rejected)`` from the output of :func:`annotate`."""
    accepted = marked.filter(F.col(C.REASON).isNull()).select(
        F.col(_U).alias(C.USER),
        F.col(_I).alias(C.ITEM),
        F.col(_R).alias(C.RATING),
        F.col(_T).cast("long").alias(C.TS),
        C.SOURCE_FILE,
        C.SOURCE_ROW,
    )
    rejected = marked.filter(F.col(C.REASON).isNotNull()).select(*REJECTED_COLUMNS)
    return accepted, rejected


def summarize(accepted: DataFrame, rejected: DataFrame) -> dict[str, int]:
    """Row counts in one aggregation: ``accepted``, ``rejected``, ``input`` and one key per reason."""
    union = accepted.select(F.lit(ACCEPTED).alias(C.REASON)).unionByName(rejected.select(C.REASON))
    counts = {r[C.REASON]: r["count"] for r in union.groupBy(C.REASON).count().collect()}
    out = {ACCEPTED: counts.get(ACCEPTED, 0)}
    out.update({reason: counts.get(reason, 0) for reason in REASONS})
    out[REJECTED] = sum(out[reason] for reason in REASONS)
    out[INPUT] = out[ACCEPTED] + out[REJECTED]
    unknown = set(counts) - set(out)
    if unknown:
        raise ValueError(f"rejected rows with unknown reasons: {sorted(unknown)}")
    return out


def check_rejected_share(counts: dict[str, int], cfg: IngestConfig, where: str) -> None:
    """Raise :class:`TooManyRejected` when the invalid share of ``counts`` (from :func:`summarize`) is above
    ``cfg.max_rejected_share``; ``where`` names the table holding the rejected rows."""
    n, invalid = counts[INPUT], sum(counts[r] for r in INVALID_REASONS)
    if n and invalid / n > cfg.max_rejected_share:
        reasons = ", ".join(f"{r} {counts[r]:,}" for r in INVALID_REASONS if counts[r])
        raise TooManyRejected(
            f"ingest: {invalid:,} of {n:,} input rows ({invalid / n:.1%}) are invalid ({reasons}), above [ingest] "
            f"max_rejected_share = {cfg.max_rejected_share}; the rejected rows are in {where} "
            "— fix the input or raise the setting"
        )


def _clean(col: Column) -> Column:
    """Trimmed value (any Unicode white space, not only spaces: a tab or a no-break space is no id), or null when it
    is empty."""
    trimmed = F.regexp_replace(col, r"(?U)^\s+|\s+$", "")
    return F.when(trimmed != "", trimmed)


def _quoted(name: str) -> Column:
    return F.concat(F.lit("'"), F.col(name), F.lit("'"))


def _where(file_col: str, row_col: str) -> Column:
    return F.concat(F.col(file_col), F.lit(":"), F.col(row_col).cast("string"))
