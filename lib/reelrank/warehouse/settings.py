"""``[warehouse]``: where the data dir is, the database and its metastore (imports no Spark: the config loads it)."""

from __future__ import annotations

from typing import Literal

from pydantic.dataclasses import dataclass

from reelrank.settings import SECTION, Identifier, NonNegativeFloat, Str

Metastore = Literal["derby", "external"]


@dataclass(frozen=True, config=SECTION)
class WarehouseConfig:
    data_dir: Str
    """Root for the warehouse, the embedded metastore, shards and models (``~`` and env vars expand).
    Resolved once by :func:`load_config` to an absolute path: an explicit override (``--data-dir``) wins, then
    ``$REELRANK_DATA_DIR``, then the files."""
    database: Identifier
    metastore: Metastore
    """``derby`` (embedded, one process at a time) or ``external`` (settings in ``metastore_conf``)."""
    metastore_conf: dict[Str, Str]
    """Extra ``spark.hadoop.*`` settings for an external metastore; secrets come from the environment
    as ``${VAR}`` placeholders, never from a committed file."""
    grace_hours: NonNegativeFloat
    """How long a replaced partition directory is kept before it is garbage-collected."""
