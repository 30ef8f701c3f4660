"""The publish stage: tonight's output checked against the last published night, then every table swapped in."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank import quality
from reelrank.catalog import TABLES, Stage
from reelrank.config import Config
from reelrank.runstate import Result, StageIO
from reelrank.stages.shared import champion_of


def run(io: StageIO, cfg: Config, *, champion: DataFrame, metrics: DataFrame, recommendations: DataFrame,
        published_runs: DataFrame | None, published_metrics: DataFrame | None, **_staged: DataFrame) -> Result:
    """Check tonight's output against the last published run, then swap every staged partition in.

    The other tables are inputs so that publishing waits for them; ``io.publish`` swaps them in."""
    chosen = champion_of(champion)
    io.ctx.record.published_model, io.ctx.record.published_why = chosen.model, chosen.why
    rows = recommendations.count()
    mine = metrics.filter(F.col(C.MODEL) == chosen.model).collect()
    tonight = {f"{r['metric']}@{r['k']}": r["value"] for r in mine}
    users = max((r["users"] or 0 for r in mine if r["metric"] == cfg.quality.metric), default=0)
    io.ctx.gate_against = quality.last_published(published_runs)
    problems = quality.check(cfg.quality, rows, tonight, chosen.model, users, io.ctx.gate_against, published_metrics)
    if problems:
        raise quality.QualityGateFailed("quality gate: " + "; ".join(problems))
    published = io.publish()
    return Result({}, len(published), f"run_date={io.run_date}, {rows:,} recommendations")


STAGE = Stage("publish", run, inputs=(*TABLES, "champion"), published=("runs", "metrics"), counts="tables")
