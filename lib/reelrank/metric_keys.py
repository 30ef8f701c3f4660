"""Names of the evaluation metrics and their ``"NAME@K"`` keys, without Spark (the config validates with them).

Ranking metrics are reported per cut-off as ``"ndcg@10"``, ``"map@10"`` ...; rating metrics (``"rmse"``,
``"mae"``) have no cut-off.
"""

from __future__ import annotations

import typing
from typing import Literal

RankingMetric = Literal["precision", "recall", "ndcg", "map", "hit_rate"]
"""The ranking metrics :func:`reelrank.evaluate.ranking_metrics` computes at each k."""
RatingMetric = Literal["rmse", "mae"]
"""The rating-prediction metrics of :func:`reelrank.evaluate.rating_metrics` (lower is better)."""

RANKING_METRICS: tuple[str, ...] = typing.get_args(RankingMetric)
RATING_METRICS: tuple[str, ...] = typing.get_args(RatingMetric)


def parse_metric_key(key: str) -> tuple[str, int | None]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``; ``"rmse"`` -> ``("rmse", None)``.

    A ranking metric needs a positive integer cut-off, a rating metric takes none; anything else is a
    :class:`ValueError` saying what is accepted.
    """
    if not isinstance(key, str):
        raise ValueError(f"a metric key must be a string, got {key!r}")
    name, at, k = key.partition("@")
    if not at:
        if name in RATING_METRICS:
            return name, None
        if name in RANKING_METRICS:
            raise ValueError(f"metric {key!r} needs a cut-off: {name}@K, e.g. {name}@10")
    elif name in RANKING_METRICS:
        if k.isascii() and k.isdigit() and int(k) > 0:
            return name, int(k)
        raise ValueError(f"metric {key!r}: the cut-off after '@' must be a positive integer")
    raise ValueError(f"unknown metric {key!r}: expected {' or '.join(RATING_METRICS)}, or NAME@K with NAME one of "
                     f"{', '.join(RANKING_METRICS)} and K a positive integer")
