"""``[source]``, ``[synthetic]`` and ``[ingest]``: what is read and what is accepted (imports no Spark: the config
loads it)."""

from __future__ import annotations

from typing import Literal

from pydantic.dataclasses import dataclass

from reelrank.settings import SECTION, Float, Fraction, Int, NonNegativeFloat, NonNegativeInt, PositiveInt, Str

SourceKind = Literal["synthetic", "movielens-100k", "movielens-csv", "parquet", "csv"]
"""Readers of :func:`reelrank.inputs.sources.read_source`."""
TimestampUnits = Literal["seconds", "auto"]
"""How :mod:`reelrank.inputs.ingest` treats integer timestamps that look like milli-, micro- or nanoseconds."""


@dataclass(frozen=True, config=SECTION)
class SourceConfig:
    kind: SourceKind
    """``synthetic``, ``movielens-100k``, ``movielens-csv``, ``parquet`` or ``csv``."""
    input: Str
    """Folder or file(s) to read; unused for ``synthetic``."""
    columns: dict[Str, Str]
    """Maps reelrank's names (user_id, item_id, rating, timestamp) to the source's column names."""
    items_input: Str
    """Optional item metadata file for ``parquet``/``csv`` sources (item_id, title, genres)."""
    delimiter: Str
    """Field separator of ``csv`` sources (and of a CSV ``items_input``)."""


@dataclass(frozen=True, config=SECTION)
class SyntheticConfig:
    users: PositiveInt
    items: PositiveInt
    ratings: PositiveInt
    genres: PositiveInt
    latent_dim: PositiveInt
    popularity_exponent: Float
    """Zipf-like exponent of item popularity: larger means a longer, thinner tail."""
    seed: Int
    start_ts: Int
    """Unix seconds of the first interaction; the history spans ``days``."""
    days: PositiveInt
    min_user_ratings: NonNegativeInt
    """Every synthetic user rates at least this many items."""
    rating_noise: NonNegativeFloat
    """Standard deviation of the per-rating noise (in stars) before rounding: the unpredictable part."""
    new_item_fraction: Fraction
    """Share of items released during the history window (rated only after release); the rest is back catalogue."""


@dataclass(frozen=True, config=SECTION)
class IngestConfig:
    rating_min: Float
    """Lowest valid rating of a ``csv``, ``parquet`` or ``synthetic`` source (MovieLens sources bring their own)."""
    rating_max: Float
    rating_step: NonNegativeFloat
    """Ratings must be ``rating_min`` plus a whole multiple of this (0.5: half stars); 0 accepts any value in range."""
    max_rejected_share: Fraction
    """Share of input rows rejected as invalid (every reason but ``duplicate`` and ``superseded``) above which the
    ingest stage fails the run, before anything is published."""
    timestamp_units: TimestampUnits
    """``seconds``: integer timestamps that look like milli-, micro- or nanoseconds are rejected; ``auto``: they
    are divided down to seconds and accepted."""
    future_slack_days: NonNegativeFloat
    """Timestamps later than the end of the run date (UTC) plus this many days are rejected."""
