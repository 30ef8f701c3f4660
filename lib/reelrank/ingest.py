"""Validate raw interactions: every input row is either accepted (typed) or rejected with a reason.

Checks run in a fixed order and the first failing one names the reason. After the per-row checks,
exact duplicates keep their first occurrence in source order, and of several ratings of one item
by one user only the most recent is accepted (ties: the last in source order). Invariant:
``accepted + rejected == input``, row for row.
"""

from __future__ import annotations

import logging

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank.config import IngestConfig
from reelrank.sources import FIELDS, TIMESTAMP

log = logging.getLogger(__name__)

MISSING_USER_ID = "missing_user_id"
MISSING_ITEM_ID = "missing_item_id"
UNPARSEABLE_RATING = "unparseable_rating"
RATING_OUT_OF_RANGE = "rating_out_of_range"
MISSING_TIMESTAMP = "missing_timestamp"
UNPARSEABLE_TIMESTAMP = "unparseable_timestamp"
DUPLICATE = "duplicate"
SUPERSEDED = "superseded"
REASONS = (
    MISSING_USER_ID,
    MISSING_ITEM_ID,
    UNPARSEABLE_RATING,
    RATING_OUT_OF_RANGE,
    MISSING_TIMESTAMP,
    UNPARSEABLE_TIMESTAMP,
    DUPLICATE,
    SUPERSEDED,
)
"""Every rejection reason, in the order the checks run."""
DETAIL = "detail"
ACCEPTED = "accepted"
REJECTED = "rejected"

ISO_DATE = r"^\d{4}-\d{2}-\d{2}([T ].*)?$"
"""Timestamps that are not integer unix seconds must look like ISO-8601 to be tried as one."""
UNIX_SECONDS = r"^[+-]?\d{1,18}$"

ACCEPTED_COLUMNS = (C.USER, C.ITEM, C.RATING, C.TS, C.SOURCE_FILE, C.SOURCE_ROW)
REJECTED_COLUMNS = (*FIELDS, C.SOURCE_FILE, C.SOURCE_ROW, C.REASON, DETAIL)

_U, _I, _R, _T = "_v_user", "_v_item", "_v_rating", "_v_ts"


def annotate(raw: DataFrame, cfg: IngestConfig) -> DataFrame:
    """The raw rows plus parsed values and ``reason``/``detail`` (both null for an accepted row).

    Exposed so a caller can persist it once and split it without re-running the window.
    """
    lo, hi = cfg.rating_min, cfg.rating_max
    user, item, rating_s, ts_s = (_clean(F.col(f)) for f in FIELDS)
    rating = F.expr(f"try_cast(trim(`{C.RATING}`) AS DOUBLE)")
    rating = F.when(~F.isnan(rating), rating)  # 'NaN' parses as a double but is no rating
    as_seconds = F.when(ts_s.rlike(UNIX_SECONDS), F.expr(f"try_cast(trim(`{TIMESTAMP}`) AS BIGINT)"))
    as_iso = F.when(ts_s.rlike(ISO_DATE), F.unix_timestamp(F.expr(f"try_cast(trim(`{TIMESTAMP}`) AS TIMESTAMP)")))
    ts = F.coalesce(as_seconds, as_iso)
    quoted_rating, quoted_ts = _quoted(C.RATING), _quoted(TIMESTAMP)

    checks: list[tuple[Column, str, Column]] = [
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
        (ts_s.isNull(), MISSING_TIMESTAMP, F.lit("timestamp is empty")),
        (
            ts.isNull(),
            UNPARSEABLE_TIMESTAMP,
            F.concat(
                F.lit("timestamp "), quoted_ts, F.lit(" is neither integer unix seconds nor an ISO-8601 date-time")
            ),
        ),
    ]
    reason: Column = F.lit(None).cast("string")
    detail: Column = F.lit(None).cast("string")
    for failed, name, text in reversed(checks):
        reason = F.when(failed, F.lit(name)).otherwise(reason)
        detail = F.when(failed, text).otherwise(detail)

    parsed = raw.select("*", user.alias(_U), item.alias(_I), rating.alias(_R), ts.alias(_T), reason.alias(C.REASON),
                        detail.alias(DETAIL))  # fmt: skip
    bad = parsed.filter(F.col(C.REASON).isNotNull())
    good = parsed.filter(F.col(C.REASON).isNull())

    # One window over (user, item): equal (ts, rating) runs are exact duplicates, whose first row in
    # source order represents them; the representative with the latest (ts, source order) wins.
    pair = Window.partitionBy(_U, _I)
    ordered = pair.orderBy(_T, _R, C.SOURCE_FILE, C.SOURCE_ROW)
    so_far = ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    same = (F.lag(_T).over(ordered) == F.col(_T)) & (F.lag(_R).over(ordered) == F.col(_R))
    where = F.struct(F.col(C.SOURCE_FILE).alias("f"), F.col(C.SOURCE_ROW).alias("r"))
    decided = (
        good.withColumn("_dup", F.coalesce(same, F.lit(False)))
        .withColumn("_first", F.last(F.when(~F.col("_dup"), where), ignorenulls=True).over(so_far))
        .withColumn("_key", F.when(~F.col("_dup"), F.struct(F.col(_T), C.SOURCE_FILE, C.SOURCE_ROW)))
        .withColumn("_winner", F.max("_key").over(pair))
        .select(
            *parsed.columns[: -2],
            F.when(F.col("_dup"), F.lit(DUPLICATE))
            .when(F.col("_key") != F.col("_winner"), F.lit(SUPERSEDED))
            .alias(C.REASON),
            F.when(
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
    return bad.unionByName(decided)


def validate(raw: DataFrame, cfg: IngestConfig) -> tuple[DataFrame, DataFrame]:
    """Split raw string interactions into ``(accepted, rejected)``.

    accepted: user_id, item_id (trimmed strings), rating (double), ts (long unix seconds),
    source_file, source_row. rejected: the raw strings, source_file, source_row, reason, detail.
    """
    marked = annotate(raw, cfg)
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
    out["input"] = out[ACCEPTED] + out[REJECTED]
    unknown = set(counts) - set(out)
    if unknown:
        raise ValueError(f"rejected rows with unknown reasons: {sorted(unknown)}")
    return out


def _clean(col: Column) -> Column:
    """Trimmed value, or null when it is empty."""
    trimmed = F.trim(col)
    return F.when(trimmed != "", trimmed)


def _quoted(name: str) -> Column:
    return F.concat(F.lit("'"), F.col(name), F.lit("'"))


def _where(file_col: str, row_col: str) -> Column:
    return F.concat(F.col(file_col), F.lit(":"), F.col(row_col).cast("string"))
