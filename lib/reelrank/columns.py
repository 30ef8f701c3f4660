"""Column names shared by every stage, in one place."""

USER = "user_id"
ITEM = "item_id"
RATING = "rating"
TS = "ts"
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
SCORE = "score"
RANK = "rank"
PREDICTION = "prediction"
LABEL = "label"
RUN_DATE = "run_date"
MODEL = "model"
MODEL_VERSION = "model_version"
"""The run that fitted the model (its files are under that run's folder)."""
SOURCE_FILE = "source_file"
SOURCE_ROW = "source_row"
ORIGIN = (SOURCE_FILE, SOURCE_ROW)
"""Where an interaction came from; within one second, a later file row is the more recent interaction."""
REASON = "reason"
TITLE = "title"
GENRES = "genres"
YEAR = "year"


def origin_columns(columns: list[str]) -> list[str]:
    """The :data:`ORIGIN` columns among ``columns`` (a frame without them is ordered by time and item alone)."""
    return [c for c in ORIGIN if c in columns]
