"""Typed, frozen configuration loaded from ``conf/*.toml``.

``conf/base.toml`` holds every setting; an environment file (``local.toml``, ``cluster.toml``)
overrides a subset of it. Every field must come from TOML: an unknown key, a missing key or a
wrong type is a :class:`ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration file is missing, malformed, or holds an unknown key or a wrong type."""


@dataclass(frozen=True)
class SparkConfig:
    master: str
    """Spark master URL, e.g. ``local[2]`` or ``spark://host:7077``."""
    app_name: str
    shuffle_partitions: int
    """``spark.sql.shuffle.partitions``: small on one machine, larger on a cluster."""
    driver_memory: str
    ui_enabled: bool
    log_level: str
    extra: dict[str, str]
    """Any further ``spark.*`` settings, passed through verbatim."""


@dataclass(frozen=True)
class WarehouseConfig:
    data_dir: str
    """Root for the warehouse, the embedded metastore, shards and models (``~`` and env vars expand).
    ``REELRANK_DATA_DIR`` overrides it."""
    database: str
    metastore: str
    """``derby`` (embedded, one process at a time) or ``external`` (settings in ``metastore_conf``)."""
    metastore_conf: dict[str, str]
    """Extra ``spark.hadoop.*`` settings for an external metastore; secrets come from the environment
    as ``${VAR}`` placeholders, never from a committed file."""
    grace_hours: float
    """How long a replaced partition directory is kept before it is garbage-collected."""


@dataclass(frozen=True)
class SourceConfig:
    kind: str
    """``synthetic``, ``movielens-100k``, ``movielens-csv``, ``parquet`` or ``csv``."""
    input: str
    """Folder or file(s) to read; unused for ``synthetic``."""
    columns: dict[str, str]
    """Maps reelrank's names (user_id, item_id, rating, timestamp) to the source's column names."""
    items_input: str
    """Optional item metadata file for ``parquet``/``csv`` sources (item_id, title, genres)."""
    delimiter: str
    """Field separator of ``csv`` sources (and of a CSV ``items_input``)."""


@dataclass(frozen=True)
class SyntheticConfig:
    users: int
    items: int
    ratings: int
    genres: int
    latent_dim: int
    popularity_exponent: float
    """Zipf-like exponent of item popularity: larger means a longer, thinner tail."""
    seed: int
    start_ts: int
    """Unix seconds of the first interaction; the history spans ``days``."""
    days: int
    min_user_ratings: int
    """Every synthetic user rates at least this many items."""
    rating_noise: float
    """Standard deviation of the per-rating noise (in stars) before rounding: the unpredictable part."""
    new_item_fraction: float
    """Share of items released during the history window (rated only after release); the rest is back catalogue."""


@dataclass(frozen=True)
class IngestConfig:
    rating_min: float
    rating_max: float


@dataclass(frozen=True)
class NeighboursConfig:
    k: int
    """Neighbours used per prediction (KNNWithMeans' ``k``)."""
    min_k: int
    """Below this many usable neighbours the prediction falls back to the entity mean."""
    min_support: int
    """Pairs with fewer co-ratings get no similarity."""
    shrinkage: float
    """``sim * n / (n + shrinkage)``; 0 disables it."""
    top_k: int
    """Neighbours stored per entity."""
    list_shrinkage: float
    """The stored top-k lists are ranked by ``sim * n / (n + list_shrinkage)`` (significance weighting), so pairs
    with tiny support (Pearson is ±1 at n = 2) do not crowd out well-supported neighbours; the stored similarity
    itself is not shrunk. 0 ranks by similarity alone."""
    recommend_shrinkage: float
    """Item-neighbour candidates score Σ sim · n / (n + recommend_shrinkage) over the user's items."""
    max_ratings_per_user: int
    """Heavy users are down-sampled (seeded) to this many ratings for item-item pairs; 0 disables the cap."""
    max_ratings_per_item: int
    """Popular items are down-sampled (seeded) to this many ratings for user-user pairs; 0 disables the cap."""
    blocks: int
    """Entities are split into this many blocks; each of the ``blocks * (blocks + 1) / 2`` block pairs is one
    task computing its pairs' sufficient statistics with sparse products. More blocks: smaller tasks."""
    seed: int


@dataclass(frozen=True)
class ALSConfig:
    rank: int
    reg_param: float
    """Spark ALS ``regParam`` (scaled by each user's / item's rating count: ALS-WR)."""
    max_iter: int
    alpha: float
    """Implicit mode: confidence is ``1 + alpha * r`` for a rating or event count ``r``."""
    implicit: bool
    """``true``: implicit-feedback ALS (top-N); ``false``: explicit ALS on ratings (rating prediction)."""
    nonnegative: bool
    blocks: int
    """``numUserBlocks`` and ``numItemBlocks``."""
    checkpoint_interval: int
    """Checkpoint ALS factors every this many iterations (needs a checkpoint dir); 0 disables it."""
    seed: int
    biases: bool
    """Explicit mode: fit a global mean plus regularised user/item biases, ALS on the residual, add back."""
    bias_reg_user: float
    """Ridge penalty of a user bias (``sum(residual) / (bias_reg_user + n_u)``)."""
    bias_reg_item: float
    """Ridge penalty of an item bias."""
    bias_iter: int
    """Alternating passes (items, then users) fitting the biases."""
    plain_weight: float
    """Explicit mode with biases: weight of a second ALS fitted on the raw ratings, averaged with the
    bias + residual model (0 disables it; 0.5 at rank 100 gives mean RMSE 0.908 on the ml-100k folds vs 0.922 without)."""
    clip_predictions: bool
    """Explicit mode: clip predicted ratings to the lowest/highest rating seen in training."""
    topn_block_users: int
    """Blocked top-N scores this many users at a time against all item factors (memory: users x items floats)."""
    tune_ranks: list[int]
    """Grid searched by ``reelrank.tune``."""
    tune_reg_params: list[float]
    tune_alphas: list[float]
    """Ignored in explicit mode."""


@dataclass(frozen=True)
class FeaturesConfig:
    als_candidates: int
    neighbour_candidates: int
    popular_candidates: int
    rows_per_row_group: int
    """Parquet row-group size: each Petastorm reader worker reads one row group at a time."""
    files_per_split: int
    val_fraction: float
    """Share of users whose labelled candidates form the validation shards (and the evaluation set)."""


@dataclass(frozen=True)
class TrainConfig:
    model: str
    """``mlp`` (features + id embeddings, pointwise BCE) or ``neumf`` (GMF + MLP over ids, sampled negatives)."""
    epochs: int
    batch_size: int
    learning_rate: float
    hidden: list[int]
    """Sizes of the MLP's hidden layers."""
    embedding_dim: int
    dropout: float
    """Dropout after each hidden layer of the MLP ranker (0 disables it)."""
    weight_decay: float
    """Decoupled weight decay (AdamW); 0 is plain Adam."""
    device: str
    """``auto`` (cuda when available, else cpu), ``cpu`` or ``cuda``."""
    num_processes: int
    """More than 1 trains data-parallel through Spark's ``TorchDistributor`` (local mode)."""
    reader_workers: int
    """Petastorm reader threads; only 1 gives a reproducible row order."""
    shuffle_rows: bool
    """Shuffle row groups and the rows inside them each epoch (seeded by ``seed`` and the epoch)."""
    seed: int
    shuffle_buffer: int
    """Rows held in the loader's shuffling buffer to mix rows across row groups; 0 turns it off."""
    mixed_precision: bool
    """bfloat16 autocast on CUDA; ignored on CPU."""
    loss: str
    """``bce`` (pointwise) or ``bpr`` (pairwise, positive vs a sampled negative; ``neumf`` only)."""
    num_negatives: int
    """Items sampled uniformly per positive as negatives (``neumf``)."""
    early_stopping_k: int
    """Cut-off of the validation NDCG used to pick the best epoch (``neumf``)."""
    early_stopping_patience: int
    """Stop after this many epochs without a better validation NDCG; 0 never stops early."""
    resume: bool
    """Continue from the checkpoint next to the model file when one is there."""
    threads: int
    """torch intra-op threads while training; 0 keeps torch's default (one per core). On a CPU shared with
    other busy processes 1 can be many times faster (bench/results/loader.md)."""


@dataclass(frozen=True)
class ScoreConfig:
    top_n: int


@dataclass(frozen=True)
class EvaluateConfig:
    holdout_per_user: int
    """Most recent interactions per user held out for evaluation (leave-last-by-time)."""
    ks: list[int]
    relevance_threshold: float
    """A held-out rating at or above this counts as relevant for ranking metrics."""
    tune_metric: str
    """Metric ``reelrank.tune`` maximises (``ndcg@10``, ``map@10`` ...) or minimises (``rmse``, ``mae``)."""


@dataclass(frozen=True)
class QualityConfig:
    enabled: bool
    min_rows_ratio: float
    """Tonight's recommendation rows must be at least this share of the last published run's."""
    max_metric_drop: float
    """Largest relative drop of ``metric``@``k`` of the published model against the last published run."""
    noise_z: float
    """A drop fails the gate only when tonight's value lies this many standard errors below the allowed floor
    (0 = any value under the floor fails), so a small validation set cannot stop a run on noise."""
    metric: str
    k: int


@dataclass(frozen=True)
class ReportConfig:
    history_runs: int
    """How many past runs the report's metric plots show."""


@dataclass(frozen=True)
class Config:
    spark: SparkConfig
    warehouse: WarehouseConfig
    source: SourceConfig
    synthetic: SyntheticConfig
    ingest: IngestConfig
    neighbours: NeighboursConfig
    als: ALSConfig
    features: FeaturesConfig
    train: TrainConfig
    score: ScoreConfig
    evaluate: EvaluateConfig
    quality: QualityConfig
    report: ReportConfig
    origin: str = field(default="", compare=False)
    """The files this config was read from (for logs)."""

    @property
    def data_dir(self) -> Path:
        raw = os.environ.get("REELRANK_DATA_DIR") or self.warehouse.data_dir
        return Path(os.path.expandvars(raw)).expanduser().resolve()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("origin")
        return d

    def fingerprint(self, exclude: tuple[str, ...] = ()) -> str:
        """A short hash of every setting (but the ``exclude``d sections), recorded with each run."""
        d = {k: v for k, v in self.to_dict().items() if k not in exclude}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def replace(self, **sections: dict[str, Any]) -> "Config":
        """A copy with some fields of some sections changed, e.g. ``cfg.replace(score={"top_n": 5})``."""
        return dataclasses.replace(_build(Config, _merge(self.to_dict(), sections), "<replace>"), origin=self.origin)


def default_conf_dir() -> Path:
    """``$REELRANK_CONF_DIR``, else the repository's ``conf/`` beside ``lib/``."""
    env = os.environ.get("REELRANK_CONF_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "conf"


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read ``base.toml`` beside ``path`` (or in the default conf dir), then ``path`` over it."""
    env_file = Path(path) if path else default_conf_dir() / "local.toml"
    if not env_file.is_file():
        raise ConfigError(f"config file not found: {env_file}")
    base_file = env_file.parent / "base.toml"
    if not base_file.is_file():
        raise ConfigError(f"config file not found: {base_file} (every environment file extends base.toml)")
    data = _read(base_file)
    files = [str(base_file)]
    if env_file.resolve() != base_file.resolve():
        data = _merge(data, _read(env_file), str(env_file))
        files.append(str(env_file))
    if overrides:
        data = _merge(data, overrides, "<overrides>")
    cfg = _build(Config, data, " + ".join(files))
    return dataclasses.replace(cfg, origin=" + ".join(files))


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e


def _merge(base: dict[str, Any], over: dict[str, Any], where: str = "", prefix: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not _is_free_dict(prefix + key):
            out[key] = _merge(out[key], value, where, f"{prefix}{key}.")
        else:
            out[key] = value
    return out


_FREE_DICTS = {"spark.extra", "warehouse.metastore_conf", "source.columns"}


def _is_free_dict(dotted: str) -> bool:
    return dotted in _FREE_DICTS


def _build(cls: type, data: Any, where: str, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: [{prefix.rstrip('.')}] must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name != "origin"}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name in fields:
        key = prefix + name
        if name not in data:
            raise ConfigError(f"{where}: missing key {key}")
        kwargs[name] = _coerce(hints[name], data[name], where, key)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, key + ".")
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        return [_coerce(inner, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, inner = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a table, got {value!r}")
        return {str(k): _coerce(inner, v, where, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{where}: {key}: unsupported union type")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float, bool)) and key.startswith("spark.extra."):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} must be {tp.__name__}, got {type(value).__name__} {value!r}")
    return value
