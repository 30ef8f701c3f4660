"""The gate before publishing: tonight's output compared with the last published run."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank.config import QualityConfig

log = logging.getLogger(__name__)


class QualityGateFailed(RuntimeError):
    """Tonight's output looks wrong next to the last published run; nothing is published."""


def last_published(runs: DataFrame | None) -> dict | None:
    """The most recent published run's id, date and recommendation row count in the ``runs`` table, or None
    before the first."""
    if runs is None:
        return None
    row = (
        runs.filter(F.col("status") == "published")
        .orderBy(F.col("finished_at").desc()).select("run_id", C.RUN_DATE, "stage_rows").first()
    )
    if row is None:
        return None
    return {"run_id": row["run_id"], C.RUN_DATE: row[C.RUN_DATE], "rows": (row["stage_rows"] or {}).get("score")}


def _metric(metrics: DataFrame | None, run_date, model: str, cfg: QualityConfig) -> tuple[float, int] | None:
    """``(value, users)`` of ``metric``@``k`` for ``model`` in the published ``metrics`` of ``run_date``, or None."""
    if metrics is None:
        return None
    row = (
        metrics
        .filter((F.col(C.RUN_DATE) == F.lit(run_date)) & (F.col("metric") == cfg.metric) & (F.col("k") == cfg.k))
        .filter(F.col(C.MODEL) == model)
        .select("value", "users").first()
    )
    return None if row is None else (float(row["value"]), int(row["users"] or 0))


def standard_error_bound(value: float, users: int) -> float:
    """Upper bound on the standard error of a mean of per-user values in [0, 1] with this mean.

    A variable in [0, 1] with mean μ has variance at most μ(1 − μ) (Bhatia–Davis), so the gate needs
    only the published mean and its user count, not the per-user values. Infinite without users.
    """
    if users <= 0:
        return math.inf
    mu = min(max(value, 0.0), 1.0)
    return math.sqrt(mu * (1.0 - mu) / users)


def metric_drop(value: float, users: int, before: float, users_before: int, cfg: QualityConfig) -> float | None:
    """How many standard errors tonight's value lies below the allowed floor, when that is a failure.

    The floor is ``(1 - max_metric_drop) * before``. The standard error of the shortfall combines both
    runs' bounds (the floor's scaled with it). None when the value is above the floor, or below it by no
    more than ``noise_z`` standard errors (with ``noise_z`` 0 every value under the floor fails).
    """
    floor = (1.0 - cfg.max_metric_drop) * before
    if value >= floor:
        return None
    se = math.hypot(
        standard_error_bound(value, users), (1.0 - cfg.max_metric_drop) * standard_error_bound(before, users_before)
    )
    z = (floor - value) / se if se > 0 else math.inf
    return z if cfg.noise_z <= 0 or z > cfg.noise_z else None


@dataclass(frozen=True)
class Champion:
    """The list to publish tonight and why."""

    model: str
    why: str


def choose_champion(values: dict[str, tuple[float, int]], configured: str, cfg: QualityConfig,
                    per_user: Mapping[str, np.ndarray] | None = None) -> Champion:
    """The night's best list (``champion = "best"``) or the configured model (``"configured"``); a configured model
    beaten by more than ``noise_z`` standard errors is replaced, or fails the run (``on_regression``).

    ``values`` maps every list evaluated tonight to ``(metric@k, users)`` on the same validation users. With
    ``per_user`` (each list's metric per validation user, aligned), the difference is tested paired: its
    standard error is the per-user differences' (a list that re-ranks another's candidates moves with it, so
    this is far tighter). Without, it combines both lists' bounds (:func:`standard_error_bound`), conservative
    for two means over the same users. With ``on_regression = "fail"`` such a night raises
    :class:`QualityGateFailed` instead.
    """
    key = f"{cfg.metric}@{cfg.k}"
    best = max(sorted(values), key=lambda m: (values[m][0], m == configured))
    if configured not in values:
        return Champion(best, f"{configured} has no {key}; {best} has the best ({values[best][0]:.4f})")
    (mine, users), top = values[configured], values[best][0]
    if best == configured:
        others = sorted((m for m in values if m != configured), key=lambda m: (-values[m][0], m))
        power = ""
        if others:  # the power of the choice: how far ahead of the runner-up, in standard errors of the difference
            second = others[0]
            lead, paired = _standard_errors(values, per_user, configured, second)
            power = (f"; {second} next at {values[second][0]:.4f}, {lead:.1f} {'paired ' if paired else ''}"
                     f"standard errors behind on {users:,} users")
        return Champion(configured, f"{configured} has the best {key} ({mine:.4f}) of {len(values)} lists{power}")
    z, paired = _standard_errors(values, per_user, best, configured)
    versus = (f"{configured} {key} {mine:.4f} vs {best} {top:.4f} on {users:,} users, {z:.1f} "
              f"{'paired ' if paired else ''}standard errors")
    if z <= cfg.noise_z:
        within = f"{versus}: within noise (quality.noise_z {cfg.noise_z})"
        if cfg.champion == "best":
            return Champion(best, f"{within}, published the better {best} (quality.champion = best)")
        return Champion(configured, within)
    if cfg.on_regression == "fail":
        raise QualityGateFailed(f"quality gate: {versus} (quality.on_regression = fail)")
    return Champion(best, f"{versus}: published {best} (quality.on_regression = publish_best)")


def choose_in_two_tiers(values: dict[str, tuple[float, int]], ranker: str, cfg: QualityConfig,
                        per_user: Mapping[str, pd.Series] | None, ranker_users: np.ndarray | None = None) -> Champion:
    """The champion when the candidate sources are judged on every user with a holdout and the ranker only on its
    validation users (``ranker_users``; it learnt from the others): the best source first, on all those users,
    then :func:`choose_champion` between the ranker and that source, paired on the ranker's users.

    ``per_user`` holds each list's metric per holdout user, indexed by user and aligned across lists.
    """
    sources = {m: v for m, v in values.items() if m != ranker}
    if ranker not in values or not sources:
        arrays = None if per_user is None else {m: s.to_numpy() for m, s in per_user.items()}
        return choose_champion(values, ranker, cfg, arrays)
    best = max(sorted(sources), key=lambda m: sources[m][0])
    arrays = None if per_user is None else {m: per_user[m].to_numpy() for m in sources if m in per_user}
    first = choose_champion(sources, best, cfg, arrays)
    duel, paired = {ranker: values[ranker], best: sources[best]}, None
    if per_user is not None and ranker in per_user and best in per_user and ranker_users is not None:
        mine, theirs = per_user[ranker].reindex(ranker_users), per_user[best].reindex(ranker_users)
        duel[best] = (float(theirs.mean()) if len(theirs) else 0.0, len(theirs))
        paired = {ranker: mine.to_numpy(), best: theirs.to_numpy()}
    second = choose_champion(duel, ranker, cfg, paired)
    return Champion(second.model, f"sources: {first.why}; then {second.why}")


def _standard_errors(values: dict[str, tuple[float, int]], per_user: Mapping[str, np.ndarray] | None, higher: str,
                     lower: str) -> tuple[float, bool]:
    """How many standard errors ``higher``'s metric lies above ``lower``'s, and whether the error is paired (the
    per-user differences') or the conservative bound of two means (:func:`standard_error_bound`)."""
    (top, top_users), (low, users) = values[higher], values[lower]
    paired = per_user is not None and higher in per_user and lower in per_user and len(per_user[higher]) > 1
    if paired:
        assert per_user is not None
        diff = np.asarray(per_user[higher], float) - np.asarray(per_user[lower], float)
        se = float(diff.std(ddof=1)) / math.sqrt(len(diff))
    else:
        se = math.hypot(standard_error_bound(low, users), standard_error_bound(top, top_users))
    if se > 0:
        return (top - low) / se, paired
    return (0.0 if top == low else math.inf), paired


def check(
    cfg: QualityConfig, rows: int, metrics: dict[str, float], model: str, users: int, prev: dict | None,
    published_metrics: DataFrame | None,
) -> list[str]:
    """Reasons tonight's output must not be published (empty when it passes).

    ``metrics`` maps "metric@k" to tonight's value for ``model``, measured on ``users`` validation users;
    ``prev`` is :func:`last_published`, and ``published_metrics`` the published ``metrics`` table it is compared
    with. Before the first published run only the absolute checks apply.
    """
    if not cfg.enabled:
        return []
    problems = []
    if rows == 0:
        problems.append("no recommendations")
    key = f"{cfg.metric}@{cfg.k}"
    value = metrics.get(key)
    if value is None or value != value:
        problems.append(f"{model} has no {key}")
    if prev is None:
        return problems
    if prev["rows"] and rows < cfg.min_rows_ratio * prev["rows"]:
        problems.append(
            f"recommendations fell to {rows:,} rows from {prev['rows']:,} in run {prev['run_id']} "
            f"(quality.min_rows_ratio {cfg.min_rows_ratio})"
        )
    before = _metric(published_metrics, prev[C.RUN_DATE], model, cfg)
    if before and before[0] and value is not None and value == value:
        z = metric_drop(value, users, before[0], before[1], cfg)
        if z is not None:
            problems.append(
                f"{model} {key} fell to {value:.4f} on {users:,} users from {before[0]:.4f} on {before[1]:,} "
                f"in run {prev['run_id']} (quality.max_metric_drop {cfg.max_metric_drop}, "
                f"{z:.1f} standard errors below the floor)"
            )
        elif value < (1 - cfg.max_metric_drop) * before[0]:
            log.warning(
                "quality: %s %s fell to %.4f on %d users from %.4f on %d, within noise (quality.noise_z %s)",
                model, key, value, users, before[0], before[1], cfg.noise_z,
            )
    return problems
