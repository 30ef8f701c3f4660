"""Down-sampling heavy users (or popular items) before Pearson pairs are counted, when the co-rating work is over
budget (as Mahout's ``maxPrefsPerUser``): the plan (:func:`plan_sampling`) and the seeded cap (:func:`cap_ratings`)
that :mod:`reelrank.neighbours` applies."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from reelrank import columns as C

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """Whether one neighbour computation counts its pairs on all ratings or on down-sampled ones, and why."""

    group: str
    """The co-rated side: ``user_idx`` for item-item pairs, ``item_idx`` for user-user."""
    work: int
    """Co-rating products on all ratings: Σ over the groups of (ratings)²."""
    budget: int
    cap: int
    """Ratings kept per group when over the budget: the configured cap, else the largest that fits the budget."""
    groups: int
    heavy: int
    """Groups with more than ``cap`` ratings (down-sampled when :attr:`sampled`)."""
    work_capped: int
    """Co-rating products with every group capped."""

    @property
    def sampled(self) -> bool:
        return self.work > self.budget and self.heavy > 0

    @property
    def capped_share(self) -> float:
        return self.heavy / self.groups if self.sampled and self.groups else 0.0

    def describe(self, pairs: str) -> str:
        if self.sampled:
            return (f"{pairs} Pearson on down-sampled ratings: co-rating work {self.work:,} > exact_work_budget "
                    f"{self.budget:,}, so {self.heavy:,} of {self.groups:,} {self.group} ({self.capped_share:.1%}) "
                    f"keep {self.cap:,} ratings (work {self.work_capped:,})")
        return f"{pairs} Pearson exact: co-rating work {self.work:,} ≤ exact_work_budget {self.budget:,}"


def budget_cap(sizes: np.ndarray, counts: np.ndarray, budget: int) -> int:
    """The largest cap c with Σ counts · min(sizes, c)² ≤ ``budget`` (at least 1): groups of ``sizes`` ratings,
    ``counts`` groups of each size. The work is monotone in c, so a bisection finds it."""
    sizes, counts = np.asarray(sizes, dtype=np.float64), np.asarray(counts, dtype=np.float64)

    def work(c: int) -> float:
        return float((counts * np.minimum(sizes, c) ** 2).sum())

    lo, hi = 1, max(int(sizes.max(initial=1)), 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if work(mid) <= budget else (lo, mid - 1)
    return lo


def plan_sampling(ratings: DataFrame, group_col: str, cap: int, budget: int) -> Sampling:
    """Count the co-rating work (one small aggregation: how many groups have each number of ratings) and decide
    whether to down-sample, and to how many ratings per group: ``cap`` when > 0, else the largest within budget."""
    hist = ratings.groupBy(group_col).count().groupBy("count").agg(F.count(F.lit(1)).alias("groups")).collect()
    sizes = np.array([r[0] for r in hist], dtype=np.int64)
    counts = np.array([r[1] for r in hist], dtype=np.int64)
    work = int((counts * sizes * sizes).sum())
    if cap <= 0:
        cap = budget_cap(sizes, counts, budget) if work > budget else int(sizes.max(initial=0))
    kept = np.minimum(sizes, cap)
    return Sampling(group_col, work, budget, cap, int(counts.sum()), int(counts[sizes > cap].sum()),
                    int((counts * kept * kept).sum()))


def cap_ratings(ratings: DataFrame, group_col: str, cap: int, seed: int) -> DataFrame:
    """Keep at most ``cap`` ratings per ``group_col`` value, a seeded pseudo-random choice; 0 keeps everything.

    The choice is by ``xxhash64(seed, user, item)``, so it does not depend on partitioning or on the run.
    """
    if cap <= 0:
        return ratings
    counts = ratings.groupBy(group_col).count()
    heavy = counts.where(F.col("count") > cap).agg(F.count(F.lit(1)), F.sum(F.col("count") - cap)).first()
    assert heavy is not None  # a global aggregate returns exactly one row
    n_heavy, dropped = heavy[0], heavy[1] or 0
    if n_heavy == 0:
        return ratings
    log.info("capping %d %s value(s) at %d ratings: %d ratings left out of the pairs", n_heavy, group_col, cap, dropped)
    w = Window.partitionBy(group_col).orderBy(F.xxhash64(F.lit(seed), C.USER_IDX, C.ITEM_IDX), C.USER_IDX, C.ITEM_IDX)
    return ratings.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= cap).drop("_rn")
