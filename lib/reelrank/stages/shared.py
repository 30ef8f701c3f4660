"""Small pieces more than one stage uses: the ratings projection, the latest published night, the trained ranker's
file, the champion row."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank import quality
from reelrank.runstate import RunFailed
from reelrank.warehouse import storage


def ratings(interactions: DataFrame) -> DataFrame:
    """What candidate sources fit on; the input position (file, row) orders interactions of the same second."""
    return interactions.select(C.USER_IDX, C.ITEM_IDX, C.RATING, C.TS, *C.origin_columns(interactions.columns))


def model_file(model_dir: str, model: str) -> str:
    """The ranker ``model`` (``[train] model``) inside the run's ``model`` folder."""
    return storage.join(model_dir, f"{model}.pt")


def model_bytes(model_dir: str, model: str) -> bytes:
    """The trained ranker serialized, to broadcast to the scoring tasks."""
    from reelrank.models import load

    return load(model_file(model_dir, model)).to_bytes()


def champion_of(frame: DataFrame) -> quality.Champion:
    """The list the evaluate stage chose to publish tonight, from its one-row ``champion`` frame."""
    row = frame.first()
    if row is None:
        raise RunFailed("the champion frame of this run is empty: rerun the evaluate stage")
    return quality.Champion(row["model"], row["why"])


def latest(published: DataFrame | None) -> DataFrame | None:
    """Rows of the most recent run_date of a published table, without the run_date column (None before the first
    night, or while the table is empty)."""
    if published is None:
        return None
    agg_row = published.agg(F.max(C.RUN_DATE)).first()
    last = agg_row[0] if agg_row is not None else None
    return None if last is None else published.filter(F.col(C.RUN_DATE) == F.lit(last)).drop(C.RUN_DATE)
